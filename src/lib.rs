//! bnc: a compiler for convolutional-network inference that removes Batch-Normalization
//! layers exactly. This crate is the facade a Rust host uses and the home of the `bnc`
//! command line.

pub use bnc_frontend as frontend;
pub use bnc_ir as ir;
pub use bnc_passes as passes;

pub mod npy;
mod save;

pub use save::save_weights;

pub use bnc_frontend::{Error as FrontendError, load_file, load_str};
pub use bnc_ir::{Graph, Tensor};
