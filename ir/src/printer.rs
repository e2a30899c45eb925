//! Printer (being written).
