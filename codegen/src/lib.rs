//! Cranelift code generation (see design.md §4). Filled in by the codegen work.
