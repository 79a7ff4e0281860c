pub mod config;
pub mod proto;
pub mod serve;
