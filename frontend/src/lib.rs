//! The `.nn` frontend (being written).
