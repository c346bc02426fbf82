//! `darts data fetch`: each dataset's official sources and published checksums, and a download
//! that never leaves behind a file it has not verified.
//!
//! A file is streamed into a hidden temporary file beside its destination while its MD5 and
//! SHA-256 are computed, checked against the published size and checksums, and only then renamed
//! into place, so a reader never sees a half-written or unverified file. A tarball is verified
//! the same way, then only the members the readers need are unpacked into a temporary folder
//! that is renamed into place; a `SHA256SUMS` written beside them lets a later run check them
//! without the tarball. The table of official files is data ([`Manifest`]) passed to [`fetch`],
//! so the tests can drive the same code with files they build themselves.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::Md5;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::progress::Transfer;

/// The environment variable that replaces the official sources, like `--mirror`.
pub const MIRROR_ENV: &str = "DARTS_DATA_MIRROR";

/// The name of the checksum file written beside unpacked tarball members (`sha256sum -c` reads it).
pub const SUMS_FILE: &str = "SHA256SUMS";

/// The datasets `darts data fetch` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FetchName {
    Mnist,
    FashionMnist,
    Cifar10,
    Cifar100,
}

/// A file as its authors publish it.
#[derive(Clone, Debug)]
pub struct Published {
    /// The file name on the server.
    pub name: String,
    pub size: u64,
    pub md5: String,
    /// Where a SHA-256 is published or pinned by well-known loaders.
    pub sha256: Option<String>,
}

/// A tarball member the readers need.
#[derive(Clone, Debug)]
pub struct Member {
    /// The path inside the archive; the member is unpacked under its file name.
    pub path: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

/// Where a dataset comes from and where it goes.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The dataset's name (`mnist`); under a mirror, files are looked for at
    /// `<mirror>/<name>/<file>`.
    pub name: String,
    /// The folder under the datasets folder where the readers look.
    pub folder: String,
    /// Base URLs tried in order; a file's URL is the base followed by its name.
    pub sources: Vec<String>,
    /// The files to download: kept as they are, or, when `members` is not empty, one tarball.
    pub files: Vec<Published>,
    /// The members of the tarball to unpack into `folder`.
    pub members: Vec<Member>,
}

/// Whether a file was fetched now or found already verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Downloaded,
    AlreadyPresent,
}

/// One file in the datasets folder after a fetch.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
    pub status: Status,
}

/// What `darts data fetch` did (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct FetchReport {
    pub dataset: String,
    pub folder: PathBuf,
    pub files: Vec<FileReport>,
    /// The tarball the files were unpacked from, when they were (it is not kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<FileReport>,
}

impl FetchReport {
    /// True when nothing had to be downloaded.
    pub fn already_present(&self) -> bool {
        self.files
            .iter()
            .all(|f| f.status == Status::AlreadyPresent)
    }
}

fn published(name: &str, size: u64, md5: &str, sha256: Option<&str>) -> Published {
    Published {
        name: name.into(),
        size,
        md5: md5.into(),
        sha256: sha256.map(String::from),
    }
}

fn member(path: &str, size: Option<u64>, sha256: Option<&str>) -> Member {
    Member {
        path: path.into(),
        size,
        sha256: sha256.map(String::from),
    }
}

/// The official files of `name`. MNIST and Fashion-MNIST: the sources and MD5s torchvision uses,
/// with the SHA-256s of the same files. CIFAR: the binary tarballs from the authors' page, their
/// published MD5s, and the SHA-256s that other loaders pin for the tarballs and the batch files.
pub fn official(name: FetchName) -> Manifest {
    let kriz = vec!["https://www.cs.toronto.edu/~kriz/".to_string()];
    match name {
        FetchName::Mnist => Manifest {
            name: "mnist".into(),
            folder: "mnist".into(),
            sources: vec![
                "http://yann.lecun.com/exdb/mnist/".into(),
                "https://ossci-datasets.s3.amazonaws.com/mnist/".into(),
            ],
            files: vec![
                published(
                    "train-images-idx3-ubyte.gz",
                    9912422,
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    Some("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
                ),
                published(
                    "train-labels-idx1-ubyte.gz",
                    28881,
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    Some("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
                ),
                published(
                    "t10k-images-idx3-ubyte.gz",
                    1648877,
                    "9fb629c4189551a2d022fa330f9573f3",
                    Some("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
                ),
                published(
                    "t10k-labels-idx1-ubyte.gz",
                    4542,
                    "ec29112dd5afa0611ce80d1b7f02629c",
                    Some("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
                ),
            ],
            members: Vec::new(),
        },
        FetchName::FashionMnist => Manifest {
            name: "fashion-mnist".into(),
            folder: "fashion-mnist".into(),
            sources: vec!["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/".into()],
            files: vec![
                published(
                    "train-images-idx3-ubyte.gz",
                    26421880,
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    Some("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
                ),
                published(
                    "train-labels-idx1-ubyte.gz",
                    29515,
                    "25c81989df183df01b3e8a0aad5dffbe",
                    Some("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
                ),
                published(
                    "t10k-images-idx3-ubyte.gz",
                    4422102,
                    "bef4ecab320f06d8554ea6380940ec79",
                    Some("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
                ),
                published(
                    "t10k-labels-idx1-ubyte.gz",
                    5148,
                    "bb300cfdad3c16e7a12a480ee83cd310",
                    Some("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
                ),
            ],
            members: Vec::new(),
        },
        FetchName::Cifar10 => {
            // 10,000 records of 1 + 3072 bytes per batch.
            let batch = Some(10_000 * 3073);
            let bin =
                |n: &str, sha: &str| member(&format!("cifar-10-batches-bin/{n}"), batch, Some(sha));
            Manifest {
                name: "cifar10".into(),
                folder: "cifar-10-batches-bin".into(),
                sources: kriz,
                files: vec![published(
                    "cifar-10-binary.tar.gz",
                    170052171,
                    "c32a1d4ab5d03f1284b67883e8d87530",
                    Some("c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
                )],
                members: vec![
                    bin(
                        "data_batch_1.bin",
                        "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
                    ),
                    bin(
                        "data_batch_2.bin",
                        "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
                    ),
                    bin(
                        "data_batch_3.bin",
                        "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
                    ),
                    bin(
                        "data_batch_4.bin",
                        "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
                    ),
                    bin(
                        "data_batch_5.bin",
                        "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
                    ),
                    bin(
                        "test_batch.bin",
                        "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
                    ),
                    member("cifar-10-batches-bin/batches.meta.txt", None, None),
                ],
            }
        }
        FetchName::Cifar100 => Manifest {
            name: "cifar100".into(),
            folder: "cifar-100-binary".into(),
            sources: kriz,
            files: vec![published(
                "cifar-100-binary.tar.gz",
                168513733,
                "03b5dce01913d631647c71ecec9e9cb8",
                Some("58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"),
            )],
            // Records of a coarse label byte, a fine label byte and 3072 pixels.
            members: vec![
                member(
                    "cifar-100-binary/train.bin",
                    Some(50_000 * 3074),
                    Some("f31298fc616915fa142368359df1c4ca2ae984d6915ca468b998a5ec6aeebf29"),
                ),
                member(
                    "cifar-100-binary/test.bin",
                    Some(10_000 * 3074),
                    Some("d8b1e6b7b3bee4020055f0699b111f60b1af1e262aeb93a0b659061746f8224a"),
                ),
                member("cifar-100-binary/fine_label_names.txt", None, None),
                member("cifar-100-binary/coarse_label_names.txt", None, None),
            ],
        },
    }
}

/// Fetches `manifest` into `root` (the datasets folder, which must exist): files already present
/// and verified are left alone, the rest are downloaded from `mirror` (`<mirror>/<name>/<file>`)
/// if given, else from the official sources in order.
pub fn fetch(manifest: &Manifest, root: &Path, mirror: Option<&str>) -> Result<FetchReport> {
    let sources = match mirror {
        Some(m) => vec![mirror_base(m, &manifest.name)?],
        None => manifest.sources.clone(),
    };
    let folder = root.join(&manifest.folder);
    let mut report = FetchReport {
        dataset: manifest.name.clone(),
        folder: folder.clone(),
        files: Vec::new(),
        archive: None,
    };
    if manifest.members.is_empty() {
        std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        for file in &manifest.files {
            let path = folder.join(&file.name);
            let present = if path.exists() {
                verify_file(&path, file)
                    .inspect_err(|e| eprintln!("{e}; downloading it again"))
                    .ok()
            } else {
                None
            };
            report.files.push(match present {
                Some(sha256) => file_report(&file.name, file.size, sha256, Status::AlreadyPresent),
                None => {
                    let sha256 = download(&sources, file, &path)?;
                    file_report(&file.name, file.size, sha256, Status::Downloaded)
                }
            });
        }
    } else {
        let [tarball] = manifest.files.as_slice() else {
            return Err(Error::InvalidArgument(format!(
                "{}: a dataset with tarball members needs exactly one tarball",
                manifest.name
            )));
        };
        if folder.exists() {
            report.files = verify_unpacked(&folder, &manifest.members).map_err(|e| {
                Error::data(
                    &folder,
                    format!(
                        "exists but does not hold the verified files ({e}); move it away and \
                         run `darts data fetch {}` again",
                        manifest.name
                    ),
                )
            })?;
        } else {
            // A verified tarball already in the datasets folder (put there by hand, say) is
            // used and kept; one downloaded now is removed once unpacked, or on any error.
            let path = root.join(&tarball.name);
            let (sha256, status, _downloaded) = match verify_file(&path, tarball) {
                Ok(sha256) => (sha256, Status::AlreadyPresent, None),
                Err(_) => {
                    let sha256 = download(&sources, tarball, &path)?;
                    let remove = Partial { path: path.clone() };
                    (sha256, Status::Downloaded, Some(remove))
                }
            };
            eprintln!("unpacking {} into {}", tarball.name, folder.display());
            report.files = unpack(&path, &manifest.members, &folder)?;
            report.archive = Some(file_report(&tarball.name, tarball.size, sha256, status));
        }
    }
    if report.already_present() {
        eprintln!(
            "{}: all {} files are already present and verified in {}",
            manifest.name,
            report.files.len(),
            folder.display()
        );
    }
    Ok(report)
}

fn file_report(name: &str, bytes: u64, sha256: String, status: Status) -> FileReport {
    FileReport {
        name: name.into(),
        bytes,
        sha256,
        status,
    }
}

/// The base URL of `name` under a mirror given by the user.
fn mirror_base(mirror: &str, name: &str) -> Result<String> {
    if !(mirror.starts_with("http://") || mirror.starts_with("https://")) {
        return Err(Error::InvalidArgument(format!(
            "mirror {mirror:?} is not an http:// or https:// URL (--mirror or ${MIRROR_ENV})"
        )));
    }
    Ok(format!("{}/{name}/", mirror.trim_end_matches('/')))
}

/// A temporary file or folder, removed on drop unless renamed away, so that no error path leaves
/// anything half-written behind; [`Partial::new`] names a hidden one beside its final path.
struct Partial {
    path: PathBuf,
}

impl Partial {
    fn new(final_path: &Path) -> Partial {
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("download");
        let path = final_path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        Partial { path }
    }

    /// Renames the temporary file or folder to `to`; nothing is left to clean up.
    fn persist(self, to: &Path) -> Result<()> {
        std::fs::rename(&self.path, to).map_err(|e| Error::io(to, e))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // After a successful persist the path no longer exists, and these fail harmlessly.
        if self.path.is_dir() {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// MD5 and SHA-256 of one stream, fed as it is read.
#[derive(Default)]
struct Digests {
    md5: Md5,
    sha256: Sha256,
}

impl Digests {
    fn update(&mut self, bytes: &[u8]) {
        self.md5.update(bytes);
        self.sha256.update(bytes);
    }

    /// Checks the result against `want`; returns the SHA-256 as lowercase hex.
    fn check(self, what: &str, want: &Published) -> Result<String> {
        let md5 = hex(&self.md5.finalize());
        let sha256 = hex(&self.sha256.finalize());
        if let Some(expected) = want.sha256.as_ref().filter(|e| **e != sha256) {
            return Err(Error::Checksum {
                what: what.into(),
                algorithm: "sha256",
                expected: expected.clone(),
                actual: sha256,
            });
        }
        if md5 != want.md5 {
            return Err(Error::Checksum {
                what: what.into(),
                algorithm: "md5",
                expected: want.md5.clone(),
                actual: md5,
            });
        }
        Ok(sha256)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a file on disk against its published size and checksums; returns its SHA-256.
pub fn verify_file(path: &Path, want: &Published) -> Result<String> {
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if size != want.size {
        return Err(Error::data(
            path,
            format!("has {size} bytes, the published file {} bytes", want.size),
        ));
    }
    let mut digests = Digests::default();
    hash_stream(File::open(path).map_err(|e| Error::io(path, e))?, |b| {
        digests.update(b);
        Ok(())
    })
    .map_err(|e| Error::io(path, e))?;
    digests.check(&path.display().to_string(), want)
}

/// Feeds `r` to `sink` in blocks; returns the number of bytes read.
fn hash_stream(
    mut r: impl Read,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        sink(&buf[..n])?;
        total += n as u64;
    }
}

/// Downloads `file` from the first of `sources` that gives the published bytes and renames it to
/// `dest`; when every source fails, the error lists each failure.
fn download(sources: &[String], file: &Published, dest: &Path) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut attempts = Vec::new();
    for (i, base) in sources.iter().enumerate() {
        let url = format!("{base}{}", file.name);
        match download_from(&agent, &url, file, dest) {
            Ok(sha256) => return Ok(sha256),
            Err(e) => {
                if i + 1 < sources.len() {
                    eprintln!("{e}; trying the next source");
                }
                attempts.push(e.to_string());
            }
        }
    }
    Err(Error::Fetch {
        file: dest.to_path_buf(),
        attempts,
    })
}

/// One attempt: stream `url` into a temporary file beside `dest`, verify, rename.
fn download_from(agent: &ureq::Agent, url: &str, want: &Published, dest: &Path) -> Result<String> {
    let failed = |msg: String| Error::Download {
        url: url.into(),
        msg,
    };
    let mut response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => failed(format!("HTTP status {code}")),
        e => failed(e.to_string()),
    })?;
    let announced = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = announced.filter(|&n| n != want.size) {
        return Err(failed(format!(
            "the server announces {n} bytes, the published file has {}",
            want.size
        )));
    }
    let tmp = Partial::new(dest);
    let mut out = File::create(&tmp.path).map_err(|e| Error::io(&tmp.path, e))?;
    let mut digests = Digests::default();
    let mut bar = Transfer::new(&want.name, want.size);
    let mut got = 0;
    // One byte more than published, so that an overlong body is noticed without reading it all.
    let body = response.body_mut().as_reader().take(want.size + 1);
    let read = hash_stream(body, |b| {
        digests.update(b);
        got += b.len() as u64;
        bar.set(got);
        out.write_all(b)
    });
    bar.finish();
    match read {
        Ok(n) if n == want.size => {}
        Ok(n) => {
            return Err(failed(format!(
                "got {n} bytes, the published file has {}",
                want.size
            )))
        }
        Err(e) => {
            return Err(failed(format!(
                "the transfer broke after {got} of {} bytes: {e}",
                want.size
            )))
        }
    }
    out.sync_all().map_err(|e| Error::io(&tmp.path, e))?;
    drop(out);
    let sha256 = digests.check(url, want)?;
    tmp.persist(dest)?;
    Ok(sha256)
}

mod tarball;

pub use tarball::{unpack, verify_unpacked};

#[cfg(test)]
mod tests;
