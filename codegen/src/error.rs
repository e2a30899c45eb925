//! What can go wrong in code generation.

use std::fmt;

/// Why compilation or a run failed.
#[derive(Clone, Debug, PartialEq)]
pub enum CodegenError {
    /// The graph is malformed (fails verification, missing parameters).
    Invalid(String),
    /// The graph uses something this code generator does not handle.
    Unsupported(String),
    /// Cranelift rejected the generated code or the host.
    Backend(String),
    InputCount {
        expected: usize,
        got: usize,
    },
    InputLength {
        index: usize,
        expected: usize,
        got: usize,
    },
    OutputCount {
        expected: usize,
        got: usize,
    },
    OutputLength {
        index: usize,
        expected: usize,
        got: usize,
    },
    /// A workspace too small for this model.
    Workspace {
        expected: usize,
        got: usize,
    },
    /// The machine could not give the memory a run needs (`what`: "workspace", "outputs").
    OutOfMemory {
        bytes: usize,
        what: &'static str,
    },
}

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodegenError::Invalid(m) => write!(f, "invalid graph: {m}"),
            CodegenError::Unsupported(m) => write!(f, "unsupported: {m}"),
            CodegenError::Backend(m) => write!(f, "code generation failed: {m}"),
            CodegenError::InputCount { expected, got } => {
                write!(f, "the model takes {expected} input(s), got {got}")
            }
            CodegenError::InputLength {
                index,
                expected,
                got,
            } => write!(f, "input {index} must have {expected} elements, got {got}"),
            CodegenError::OutputCount { expected, got } => {
                write!(f, "the model has {expected} output(s), got {got} buffer(s)")
            }
            CodegenError::OutputLength {
                index,
                expected,
                got,
            } => write!(f, "output {index} must have {expected} elements, got {got}"),
            CodegenError::Workspace { expected, got } => {
                write!(f, "workspace must hold {expected} floats, has {got}")
            }
            CodegenError::OutOfMemory { bytes, what } => {
                write!(
                    f,
                    "out of memory: cannot allocate {bytes} bytes for the {what}"
                )
            }
        }
    }
}

impl std::error::Error for CodegenError {}

pub(crate) fn backend(e: impl fmt::Display) -> CodegenError {
    CodegenError::Backend(e.to_string())
}
