pub mod augment;
pub mod builtin;
pub mod cifar;
pub mod folder;
pub mod loader;
pub mod seed;
pub mod split;

/// An image-classification dataset held as raw bytes (N×C×H×W, row-major); normalised per batch.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}
