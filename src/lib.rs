pub mod metrics;
pub mod net;
pub mod proto;
