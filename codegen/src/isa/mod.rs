//! The ISA layer: one folder per architecture, holding everything that knows it (see
//! `docs/design.md` §4 and `docs/adding-a-target.md`).

pub(crate) mod x64;
