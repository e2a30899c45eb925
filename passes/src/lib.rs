//! Graph-level passes: BN folding and friends (see ../shared/design.md §3). Filled in by the folding work.
