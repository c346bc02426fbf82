//! CIFAR-10, binary version: files of 3073-byte records (one label byte, then the 32×32 red,
//! green and blue planes, each row-major). The record layout already is C×H×W, so records are
//! copied into a [`Dataset`] without reordering.
//!
//! Shortened files (a prefix of the official batches) are fine; a file whose size is not a whole
//! number of records, or a label outside 0..10, is an error that names the file and byte offset.

use std::path::{Path, PathBuf};

use super::Dataset;
use crate::error::{Error, Result};

/// Bytes per record: one label, then 3 × 32 × 32 pixels.
pub const RECORD_BYTES: usize = 1 + 3 * 32 * 32;

/// The class names of the official `batches.meta.txt`, used when that file is absent.
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The official archive unpacks into this folder; accepting its parent saves users a path segment.
const ARCHIVE_SUBDIR: &str = "cifar-10-batches-bin";

/// The training and test sets of a CIFAR-10 folder.
#[derive(Clone, Debug)]
pub struct Cifar10 {
    pub train: Dataset,
    pub test: Dataset,
    /// The batch files read: the training files, then the test files.
    pub files: Vec<PathBuf>,
}

/// Loads CIFAR-10 from `dir` (or `dir/cifar-10-batches-bin`): the training set from every file
/// whose name contains `data_batch` and ends in `.bin`, the test set from every `test_batch*.bin`,
/// each in name order, and the class names from `batches.meta.txt` when present.
///
/// ```no_run
/// let cifar = darts::data::cifar::load(std::path::Path::new("datasets/cifar-10-subset"))?;
/// assert_eq!((cifar.train.channels, cifar.train.height, cifar.train.width), (3, 32, 32));
/// # Ok::<(), darts::Error>(())
/// ```
pub fn load(dir: &Path) -> Result<Cifar10> {
    let nested = dir.join(ARCHIVE_SUBDIR);
    let mut looked_in = vec![dir.to_path_buf()];
    if nested.is_dir() {
        looked_in.push(nested);
    }
    for root in &looked_in {
        let train = batch_files(root, |name| name.contains("data_batch"))?;
        let test = batch_files(root, |name| name.starts_with("test_batch"))?;
        if train.is_empty() && test.is_empty() {
            continue;
        }
        if train.is_empty() || test.is_empty() {
            let missing = if train.is_empty() {
                "no training file (*data_batch*.bin)"
            } else {
                "no test file (test_batch*.bin)"
            };
            return Err(Error::data(root, format!("CIFAR-10 folder has {missing}")));
        }
        let names = class_names(root)?;
        return Ok(Cifar10 {
            train: load_files(&train, names.clone())?,
            test: load_files(&test, names)?,
            files: train.into_iter().chain(test).collect(),
        });
    }
    let places: Vec<String> = looked_in.iter().map(|p| p.display().to_string()).collect();
    Err(Error::data(
        dir,
        format!(
            "no CIFAR-10 binary files: looked for *data_batch*.bin and test_batch*.bin in {} \
             (download the binary version, cifar-10-binary.tar.gz, and unpack it there)",
            places.join(" and ")
        ),
    ))
}

/// Reads the records of `files`, in order, into one dataset with the given class names.
pub fn load_files(files: &[PathBuf], class_names: Vec<String>) -> Result<Dataset> {
    if class_names.len() != CLASS_NAMES.len() {
        return Err(Error::InvalidArgument(format!(
            "CIFAR-10 needs 10 class names, got {}",
            class_names.len()
        )));
    }
    let mut data = Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        channels: 3,
        height: 32,
        width: 32,
        num_classes: CLASS_NAMES.len(),
        class_names,
    };
    for path in files {
        append_records(path, &mut data)?;
    }
    if data.is_empty() {
        return Err(Error::InvalidArgument(
            "no CIFAR-10 files given, or all of them are empty".into(),
        ));
    }
    Ok(data)
}

/// Appends the records of one file, checking its size and every label.
fn append_records(path: &Path, data: &mut Dataset) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let whole = bytes.len() / RECORD_BYTES * RECORD_BYTES;
    if whole != bytes.len() {
        return Err(Error::data(
            path,
            format!(
                "{} bytes is not a whole number of {RECORD_BYTES}-byte records: torn record at \
                 byte offset {whole}",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / RECORD_BYTES;
    data.labels.reserve(n);
    data.images.reserve(n * (RECORD_BYTES - 1));
    for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = record[0];
        if usize::from(label) >= CLASS_NAMES.len() {
            return Err(Error::data(
                path,
                format!(
                    "label {label} of record {i} at byte offset {} is not a CIFAR-10 class (0..9)",
                    i * RECORD_BYTES
                ),
            ));
        }
        data.labels.push(label);
        data.images.extend_from_slice(&record[1..]);
    }
    Ok(())
}

/// The `.bin` files in `dir` whose names pass `keep`, sorted by name.
fn batch_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".bin") && keep(name) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Class names from `batches.meta.txt` (one per line, blank lines ignored), else the standard ten.
fn class_names(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("batches.meta.txt");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(CLASS_NAMES.iter().map(|s| s.to_string()).collect())
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != CLASS_NAMES.len() {
        return Err(Error::data(
            &path,
            format!(
                "expected 10 class names, one per line, found {}",
                names.len()
            ),
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system temp dir, unique to this process and test.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("darts-cifar-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(label: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![fill; RECORD_BYTES];
        r[0] = label;
        r
    }

    #[test]
    fn reads_records_in_file_order() {
        let dir = temp_dir("order");
        let mut bytes = record(3, 7);
        bytes.extend(record(9, 200));
        std::fs::write(dir.join("data_batch_1.bin"), &bytes).unwrap();
        std::fs::write(dir.join("data_batch_2.bin"), record(0, 1)).unwrap();
        std::fs::write(dir.join("test_batch.bin"), record(5, 2)).unwrap();
        let c = load(&dir).unwrap();
        assert_eq!(c.train.labels, vec![3, 9, 0]);
        assert_eq!(c.train.images.len(), 3 * 3072);
        assert_eq!(c.train.images[3072], 200);
        assert_eq!(c.test.labels, vec![5]);
        assert_eq!(c.train.class_names[9], "truck");
        let names: Vec<_> = c.files.iter().map(|f| f.file_name().unwrap()).collect();
        assert_eq!(
            names,
            ["data_batch_1.bin", "data_batch_2.bin", "test_batch.bin"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_record_names_file_and_offset() {
        let dir = temp_dir("torn");
        let mut bytes = record(1, 0);
        bytes.extend(&record(2, 0)[..100]);
        let path = dir.join("data_batch_1.bin");
        std::fs::write(&path, &bytes).unwrap();
        let msg = load_files(
            std::slice::from_ref(&path),
            CLASS_NAMES.map(String::from).to_vec(),
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("byte offset 3073"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_label_names_file_and_offset() {
        let dir = temp_dir("label");
        let mut bytes = record(1, 0);
        bytes.extend(record(10, 0));
        std::fs::write(dir.join("data_batch_1.bin"), &bytes).unwrap();
        std::fs::write(dir.join("test_batch.bin"), record(0, 0)).unwrap();
        let msg = load(&dir).unwrap_err().to_string();
        assert!(msg.contains("data_batch_1.bin"), "{msg}");
        assert!(
            msg.contains("label 10") && msg.contains("byte offset 3073"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_files_say_what_was_looked_for() {
        let dir = temp_dir("missing");
        let msg = load(&dir).unwrap_err().to_string();
        assert!(
            msg.contains("data_batch") && msg.contains("test_batch"),
            "{msg}"
        );
        std::fs::write(dir.join("data_batch_1.bin"), record(0, 0)).unwrap();
        let msg = load(&dir).unwrap_err().to_string();
        assert!(msg.contains("no test file"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn meta_file_supplies_class_names() {
        let dir = temp_dir("meta");
        std::fs::write(dir.join("data_batch_1.bin"), record(0, 0)).unwrap();
        std::fs::write(dir.join("test_batch.bin"), record(0, 0)).unwrap();
        let names: String = (0..10).map(|i| format!("c{i}\n")).collect();
        std::fs::write(dir.join("batches.meta.txt"), names + "\n").unwrap();
        assert_eq!(load(&dir).unwrap().test.class_names[4], "c4");
        std::fs::write(dir.join("batches.meta.txt"), "a\nb\n").unwrap();
        let msg = load(&dir).unwrap_err().to_string();
        assert!(msg.contains("batches.meta.txt"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
