mod attfill;
mod attline;
mod attmarker;
mod consts;
mod error;
pub(crate) mod named;
mod object;
mod objstring;

pub(crate) use attfill::AttFill;
pub(crate) use attline::AttLine;
pub(crate) use attmarker::AttMarker;
pub use named::Named;
pub(crate) use object::Object;
pub use objstring::TObjString;
