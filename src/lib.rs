//! bnc facade.
