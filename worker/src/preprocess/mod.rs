//! Control-map preprocessors (this file only declares the depth modules; the
//! lead merges it with the registry, canny, invert and scribble).

pub mod depth;
pub mod depth_net;
#[cfg(test)]
mod depth_reference_tests;
pub mod depth_tiny;
pub mod depth_weights;
