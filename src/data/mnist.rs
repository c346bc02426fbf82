//! MNIST and Fashion-MNIST in LeCun's IDX format, raw or gzipped.
//!
//! An IDX file is a big-endian header (magic `0x00000803` and count, rows, cols for images;
//! `0x00000801` and count for labels) followed by one byte per pixel or label. Every check
//! names the file, because the usual failure is a truncated download or a swapped file.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::{Dataset, Split};
use crate::error::{Error, Result};

const IMAGES_MAGIC: u32 = 0x803;
const LABELS_MAGIC: u32 = 0x801;
const NUM_CLASSES: usize = 10;

/// Fashion-MNIST's class names, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// MNIST from `root/mnist` (`root` as given by [`super::data_dir`]).
pub fn mnist(root: &Path, split: Split) -> Result<Dataset> {
    load_idx(&root.join("mnist"), split)
}

/// Fashion-MNIST from `root/fashion-mnist`, with its class names.
pub fn fashion_mnist(root: &Path, split: Split) -> Result<Dataset> {
    let mut ds = load_idx(&root.join("fashion-mnist"), split)?;
    ds.class_names = FASHION_CLASSES.iter().map(|s| s.to_string()).collect();
    Ok(ds)
}

/// Reads the standard file pair for `split` from `dir` (see [`idx_files`]). Classes are named
/// `"0"`..`"9"`.
pub fn load_idx(dir: &Path, split: Split) -> Result<Dataset> {
    let [img_path, lbl_path] = idx_files(dir, split)?;
    let img_bytes = read_maybe_gz(&img_path)?;
    let lbl_bytes = read_maybe_gz(&lbl_path)?;
    let (count, height, width, images) = parse_images(&img_path, img_bytes)?;
    let labels = parse_labels(&lbl_path, lbl_bytes)?;
    if labels.len() != count {
        return Err(Error::data(
            &lbl_path,
            format!(
                "has {} labels but {} has {count} images",
                labels.len(),
                img_path.display()
            ),
        ));
    }
    Ok(Dataset {
        images,
        labels,
        channels: 1,
        height,
        width,
        num_classes: NUM_CLASSES,
        class_names: (0..NUM_CLASSES).map(|c| c.to_string()).collect(),
    })
}

/// The files [`load_idx`] reads for `split`: `train-images-idx3-ubyte` and
/// `train-labels-idx1-ubyte`, or the `t10k-` ones, each raw or with `.gz` appended (raw first).
pub fn idx_files(dir: &Path, split: Split) -> Result<[PathBuf; 2]> {
    let stem = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    Ok([
        find(dir, &format!("{stem}-images-idx3-ubyte"))?,
        find(dir, &format!("{stem}-labels-idx1-ubyte"))?,
    ])
}

/// `dir/name` if it exists, else `dir/name.gz`.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    match (raw.is_file(), gz.is_file()) {
        (true, _) => Ok(raw),
        (false, true) => Ok(gz),
        (false, false) => Err(Error::data(
            raw,
            format!(
                "missing (neither it nor {name}.gz exists in {})",
                dir.display()
            ),
        )),
    }
}

/// The contents of `path`, decompressed when it is gzip: recognised by its magic bytes, so a
/// compressed file without the suffix also works.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .map_err(|e| Error::data(path, format!("is not a valid gzip stream: {e}")))?;
    Ok(out)
}

/// Big-endian u32 number `i` of the header; the caller has checked the length.
fn be_u32(bytes: &[u8], i: usize) -> usize {
    u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes")) as usize
}

/// Checks the header (magic and `dims` sizes) and the payload length; returns the sizes and
/// the payload.
fn parse(
    path: &Path,
    mut bytes: Vec<u8>,
    magic: u32,
    what: &str,
    dims: usize,
) -> Result<(Vec<usize>, Vec<u8>)> {
    let header = 4 * (1 + dims);
    if bytes.len() < header {
        return Err(Error::data(
            path,
            format!(
                "truncated: {} bytes, shorter than the {header}-byte IDX header",
                bytes.len()
            ),
        ));
    }
    let found = be_u32(&bytes, 0) as u32;
    if found != magic {
        return Err(Error::data(
            path,
            format!("bad magic number 0x{found:08x}, expected 0x{magic:08x} for IDX {what}"),
        ));
    }
    let sizes: Vec<usize> = (1..=dims).map(|i| be_u32(&bytes, i)).collect();
    let want = sizes.iter().try_fold(1usize, |acc, &s| acc.checked_mul(s));
    let have = bytes.len() - header;
    match want {
        Some(w) if w == have => {}
        Some(w) if w > have => {
            return Err(Error::data(
                path,
                format!("truncated: the header promises {sizes:?} = {w} bytes of {what}, the file has {have}"),
            ))
        }
        _ => {
            return Err(Error::data(
                path,
                format!("the header says {sizes:?} but the file has {have} bytes of {what} (extra data)"),
            ))
        }
    }
    bytes.drain(..header);
    Ok((sizes, bytes))
}

fn parse_images(path: &Path, bytes: Vec<u8>) -> Result<(usize, usize, usize, Vec<u8>)> {
    let (sizes, pixels) = parse(path, bytes, IMAGES_MAGIC, "images", 3)?;
    if sizes[1] == 0 || sizes[2] == 0 {
        return Err(Error::data(
            path,
            format!("images of size {}×{}", sizes[1], sizes[2]),
        ));
    }
    Ok((sizes[0], sizes[1], sizes[2], pixels))
}

fn parse_labels(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>> {
    let (_, labels) = parse(path, bytes, LABELS_MAGIC, "labels", 1)?;
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= NUM_CLASSES)
    {
        return Err(Error::data(
            path,
            format!("label {l} at index {i} is not a class (0..{NUM_CLASSES})"),
        ));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::data::test_data;

    #[test]
    fn real_mnist_shapes_and_class_counts() {
        let Some(root) = test_data("mnist") else {
            return;
        };
        let train = mnist(&root, Split::Train).unwrap();
        assert_eq!(
            (train.len(), train.channels, train.height, train.width),
            (60000, 1, 28, 28)
        );
        assert_eq!(train.images.len(), 60000 * 784);
        assert_eq!(
            train.class_counts(),
            [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
        );
        let test = mnist(&root, Split::Test).unwrap();
        assert_eq!(test.len(), 10000);
        assert_eq!(
            test.class_counts(),
            [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
        );
        let norm = crate::data::Normalize::fit(&train).unwrap();
        assert!((norm.mean[0] - 0.1307).abs() < 1e-4 && (norm.std[0] - 0.3081).abs() < 1e-4);
    }

    #[test]
    fn real_fashion_mnist_counts_and_names() {
        let Some(root) = test_data("fashion-mnist") else {
            return;
        };
        let test = fashion_mnist(&root, Split::Test).unwrap();
        assert_eq!((test.len(), test.height, test.width), (10000, 28, 28));
        assert_eq!(test.class_counts(), vec![1000; 10]);
        assert_eq!(test.class_names[9], "Ankle boot");
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// A fresh folder holding the given files (gzipping those whose name ends in `.gz`).
    fn folder(tag: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("darts-idx-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in files {
            let data = if name.ends_with(".gz") {
                gzip(bytes)
            } else {
                bytes.clone()
            };
            std::fs::write(dir.join(name), data).unwrap();
        }
        dir
    }

    fn idx(magic: u32, sizes: &[u32], payload: usize) -> Vec<u8> {
        let mut v: Vec<u8> = std::iter::once(magic)
            .chain(sizes.iter().copied())
            .flat_map(u32::to_be_bytes)
            .collect();
        v.extend((0..payload).map(|i| (i % 10) as u8));
        v
    }

    const IMG: &str = "t10k-images-idx3-ubyte";
    const LBL: &str = "t10k-labels-idx1-ubyte";

    fn load_err(tag: &str, files: &[(&str, Vec<u8>)]) -> String {
        let dir = folder(tag, files);
        let err = load_idx(&dir, Split::Test).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        err
    }

    #[test]
    fn raw_and_gzipped_files_load() {
        let dir = folder(
            "ok",
            &[
                (IMG, idx(0x803, &[3, 2, 2], 12)),
                ("t10k-labels-idx1-ubyte.gz", idx(0x801, &[3], 3)),
            ],
        );
        let ds = load_idx(&dir, Split::Test).unwrap();
        assert_eq!((ds.len(), ds.height, ds.width), (3, 2, 2));
        assert_eq!(ds.labels, vec![0, 1, 2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_magic_names_the_file() {
        let err = load_err(
            "magic",
            &[
                (IMG, idx(0x801, &[3, 2, 2], 12)),
                (LBL, idx(0x801, &[3], 3)),
            ],
        );
        assert!(err.contains(IMG) && err.contains("magic"), "{err}");
        let err = load_err(
            "magic2",
            &[
                (IMG, idx(0x803, &[3, 2, 2], 12)),
                (LBL, idx(0x803, &[3], 3)),
            ],
        );
        assert!(err.contains(LBL) && err.contains("magic"), "{err}");
    }

    #[test]
    fn truncated_file_names_the_file() {
        let err = load_err(
            "trunc",
            &[
                (IMG, idx(0x803, &[3, 2, 2], 11)),
                (LBL, idx(0x801, &[3], 3)),
            ],
        );
        assert!(err.contains(IMG) && err.contains("truncated"), "{err}");
        let err = load_err(
            "trunc2",
            &[(IMG, idx(0x803, &[3, 2, 2], 12)), (LBL, vec![0, 0, 8])],
        );
        assert!(err.contains(LBL) && err.contains("truncated"), "{err}");
        let gz = gzip(&idx(0x803, &[3, 2, 2], 12));
        let cut = gz[..gz.len() / 2].to_vec();
        let err = load_err("gztrunc", &[(IMG, cut), (LBL, idx(0x801, &[3], 3))]);
        assert!(err.contains(IMG) && err.contains("gzip"), "{err}");
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let err = load_err(
            "count",
            &[
                (IMG, idx(0x803, &[3, 2, 2], 12)),
                (LBL, idx(0x801, &[2], 2)),
            ],
        );
        assert!(
            err.contains(IMG) && err.contains(LBL) && err.contains("2 labels"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_and_bad_label_are_reported() {
        let err = load_err("missing", &[(LBL, idx(0x801, &[3], 3))]);
        assert!(err.contains(IMG) && err.contains("missing"), "{err}");
        let mut labels = idx(0x801, &[3], 3);
        labels[9] = 10;
        let err = load_err("label", &[(IMG, idx(0x803, &[3, 2, 2], 12)), (LBL, labels)]);
        assert!(err.contains(LBL) && err.contains("label 10"), "{err}");
    }
}
