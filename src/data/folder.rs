//! Image-folder datasets: `root/<class>/*.png|jpg|jpeg`, the layout of torchvision's
//! `ImageFolder`. Classes are the sub-folders sorted by name; files with other extensions and
//! hidden entries are skipped. When `root/train` exists, it is the training set and `root/test`
//! (if present) the test set; otherwise the whole folder is the training set and the caller
//! splits it (see [`super::split::train_test_split`]).
//!
//! All images must have the same size: the reader never resizes, because a silent resize changes
//! what the network sees. Images become 1 channel when every image is grayscale, else RGB (alpha
//! dropped).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader};

use super::Dataset;
use crate::error::{Error, Result};

/// The extensions read, compared case-insensitively.
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The training set and, when the folder has a `test` split, the test set.
#[derive(Clone, Debug)]
pub struct FolderSplits {
    pub train: Dataset,
    pub test: Option<Dataset>,
}

/// Loads `root` as described in the module docs.
pub fn load(root: &Path) -> Result<FolderSplits> {
    if !root.is_dir() {
        return Err(Error::data(root, "image folder not found"));
    }
    let train_dir = root.join("train");
    if !train_dir.is_dir() {
        return Ok(FolderSplits {
            train: load_split(root, None)?,
            test: None,
        });
    }
    let train = load_split(&train_dir, None)?;
    let test_dir = root.join("test");
    let test = if test_dir.is_dir() {
        Some(load_split(&test_dir, Some(&train))?)
    } else {
        None
    };
    Ok(FolderSplits { train, test })
}

/// Reads one split. A test split takes its class list, channel count and image size from the
/// training split so that labels mean the same in both.
fn load_split(dir: &Path, train: Option<&Dataset>) -> Result<Dataset> {
    let classes = sorted_entries(dir, |p| p.is_dir())?;
    if classes.is_empty() {
        return Err(Error::data(
            dir,
            "no class sub-folders (expected <class>/*.png|jpg|jpeg)",
        ));
    }
    let class_names: Vec<String> = match train {
        Some(t) => t.class_names.clone(),
        None => classes.iter().map(|p| file_name(p).to_string()).collect(),
    };
    if class_names.len() > 256 {
        return Err(Error::data(
            dir,
            format!("{} classes; at most 256 are supported", class_names.len()),
        ));
    }

    // Decode everything first: the channel count depends on whether *all* images are grayscale.
    let mut decoded: Vec<(PathBuf, DynamicImage)> = Vec::new();
    let mut labels = Vec::new();
    for class_dir in &classes {
        let name = file_name(class_dir);
        let label = class_names
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| Error::data(class_dir, "class does not exist in the training split"))?;
        let files = sorted_entries(class_dir, is_image_file)?;
        if files.is_empty() {
            return Err(Error::data(
                class_dir,
                "class folder holds no .png/.jpg/.jpeg files",
            ));
        }
        for path in files {
            let img = decode(&path)?;
            decoded.push((path, img));
            labels.push(label as u8);
        }
    }

    let (first_path, first) = &decoded[0];
    let (width, height) = match train {
        Some(t) => (t.width as u32, t.height as u32),
        None => (first.width(), first.height()),
    };
    for (path, img) in &decoded {
        if (img.width(), img.height()) != (width, height) {
            let reference = match train {
                Some(_) => "the training images".to_string(),
                None => first_path.display().to_string(),
            };
            return Err(Error::data(
                path,
                format!(
                    "image is {}x{} but {reference} is {width}x{height}; all images must have \
                     the same size (resize them beforehand)",
                    img.width(),
                    img.height()
                ),
            ));
        }
    }
    let all_gray = decoded.iter().all(|(_, img)| !img.color().has_color());
    let channels = match train {
        Some(t) => t.channels,
        None if all_gray => 1,
        None => 3,
    };

    let (h, w) = (height as usize, width as usize);
    let mut images = Vec::with_capacity(decoded.len() * channels * h * w);
    for (_, img) in &decoded {
        if channels == 1 {
            images.extend_from_slice(img.to_luma8().as_raw());
        } else {
            // The decoder gives interleaved RGB (H×W×3); the dataset stores planes (3×H×W).
            let rgb = img.to_rgb8();
            let raw = rgb.as_raw();
            for c in 0..3 {
                images.extend(raw.iter().skip(c).step_by(3));
            }
        }
    }
    Ok(Dataset {
        images,
        labels,
        channels,
        height: h,
        width: w,
        num_classes: class_names.len(),
        class_names,
    })
}

/// Reads and decodes one image, telling I/O failures apart from undecodable contents.
fn decode(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::data(path, format!("cannot decode image: {e}")))
}

fn is_image_file(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    path.is_file() && EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(ext))
}

/// The non-hidden entries of `dir` that pass `keep`, sorted by name so labels are reproducible.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if !file_name(&path).starts_with('.') && keep(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("darts-folder-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn gray(dir: &Path, class: &str, file: &str, w: u32, h: u32, v: u8) {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        GrayImage::from_pixel(w, h, Luma([v]))
            .save(dir.join(class).join(file))
            .unwrap();
    }

    #[test]
    fn grayscale_folder_gives_one_channel_sorted_classes() {
        let dir = temp_dir("gray");
        gray(&dir, "b_cat", "1.png", 3, 2, 10);
        gray(&dir, "a_dog", "2.png", 3, 2, 20);
        gray(&dir, "a_dog", "1.png", 3, 2, 30);
        std::fs::write(dir.join("a_dog/notes.txt"), "skipped").unwrap();
        let s = load(&dir).unwrap();
        assert!(s.test.is_none());
        let d = s.train;
        assert_eq!(d.class_names, vec!["a_dog", "b_cat"]);
        assert_eq!((d.channels, d.height, d.width), (1, 2, 3));
        assert_eq!(d.labels, vec![0, 0, 1]);
        assert_eq!(&d.images[..6], &[30; 6]);
        assert_eq!(&d.images[12..], &[10; 6]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn colour_image_makes_rgb_planes_and_splits_are_read() {
        let dir = temp_dir("rgb");
        gray(&dir.join("train"), "x", "g.png", 2, 2, 5);
        std::fs::create_dir_all(dir.join("train/y")).unwrap();
        RgbImage::from_pixel(2, 2, Rgb([1, 2, 3]))
            .save(dir.join("train/y/c.png"))
            .unwrap();
        gray(&dir.join("test"), "y", "t.png", 2, 2, 9);
        RgbImage::from_pixel(2, 2, Rgb([200, 100, 50]))
            .save(dir.join("train/y/d.JPG"))
            .unwrap();
        let s = load(&dir).unwrap();
        assert_eq!(s.train.channels, 3);
        assert_eq!(s.train.labels, vec![0, 1, 1]);
        // JPEG is lossy: only roughly the colour that was written.
        assert!(s.train.images[24..]
            .iter()
            .step_by(4)
            .zip([200, 100, 50])
            .all(|(&v, w)| v.abs_diff(w) < 8));
        assert_eq!(s.train.images[12..24], [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
        let test = s.test.unwrap();
        assert_eq!((test.channels, test.labels.clone()), (3, vec![1]));
        assert_eq!(test.images, vec![9; 12]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn odd_size_and_broken_files_are_named() {
        let dir = temp_dir("bad");
        gray(&dir, "a", "1.png", 4, 4, 0);
        gray(&dir, "b", "odd.png", 4, 5, 0);
        let msg = load(&dir).unwrap_err().to_string();
        assert!(msg.contains("odd.png") && msg.contains("4x5"), "{msg}");
        std::fs::remove_file(dir.join("b/odd.png")).unwrap();
        std::fs::write(dir.join("b/broken.png"), b"not a png").unwrap();
        let msg = load(&dir).unwrap_err().to_string();
        assert!(msg.contains("broken.png"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
