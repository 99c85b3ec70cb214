//! The operations, one module per family. Each is a free function over [`crate::Raster`].

pub mod color;
pub mod edges;
pub mod filter;
pub mod geometry;
pub mod resize;
pub mod smartcrop;
