//! From files to a typed model: [`load`] reads and parses (the only I/O), [`lower`] turns KDL into the
//! model, [`value`] parses durations and sizes.

pub mod load;
pub mod lower;
pub mod parse;
pub mod reader;
pub mod value;

pub use load::{Loaded, display_name, load};
