//! Running compiled code: in process (`jit`), or linked into a C program (`object`), on a
//! thread pool (`pool`), with weights and workspaces on huge pages (`hugemem`).

pub(crate) mod hugemem;
pub(crate) mod jit;
pub(crate) mod object;
pub(crate) mod pool;
