//! tether wire pieces.
