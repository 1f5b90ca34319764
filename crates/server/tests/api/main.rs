//! Black-box tests of the server: the real application on port 0, its own database each,
//! driven through the real signed client.

mod audit;
mod auth;
mod console;
mod credentials;
mod errors;
mod fuzz;
mod helpers;
mod jobs;
mod metrics;
mod openapi;
mod restart;
