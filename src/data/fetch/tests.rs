//! The tarball path of `darts data fetch` on archives built here: the official tarballs are not
//! available offline, so the manifest's checksums are computed from the test's own bytes.

use std::io::Write;

use super::*;

/// A fresh folder under the system temp dir, unique to this process and test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("darts-fetch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A gzipped tarball of `(path, bytes)` members, written as given: a path with `..` goes into
/// the header raw, as a malicious archive would have it.
fn tarball(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in members {
        let mut header = tar::Header::new_old();
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *bytes).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// Writes `bytes` as `dir/name` and describes it as published (checksums of those bytes).
fn publish(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, Published) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let md5 = hex(&Md5::digest(bytes));
    let want = published(name, bytes.len() as u64, &md5, Some(&sha256(bytes)));
    (path, want)
}

const TRAIN: &[u8] = b"training records";
const TEST: &[u8] = b"test records";

fn batch_members() -> Vec<Member> {
    vec![
        member(
            "batches/train.bin",
            Some(TRAIN.len() as u64),
            Some(&sha256(TRAIN)),
        ),
        member("batches/test.bin", None, None),
    ]
}

/// Every name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn unpacks_only_the_listed_members_and_verifies_them() {
    let dir = temp_dir("unpack");
    let bytes = tarball(&[
        ("batches/readme.html", b"<html>"),
        ("./batches/train.bin", TRAIN),
        ("batches/test.bin", TEST),
    ]);
    let (path, want) = publish(&dir, "data.tar.gz", &bytes);
    assert_eq!(
        verify_file(&path, &want).unwrap(),
        want.sha256.clone().unwrap()
    );
    let dest = dir.join("batches");
    let files = unpack(&path, &batch_members(), &dest).unwrap();
    assert_eq!(names(&dest), ["SHA256SUMS", "test.bin", "train.bin"]);
    assert_eq!(std::fs::read(dest.join("train.bin")).unwrap(), TRAIN);
    assert_eq!(files[1].sha256, sha256(TEST));
    // The SHA256SUMS lets a later run check the files without the tarball.
    let again = verify_unpacked(&dest, &batch_members()).unwrap();
    assert!(again.iter().all(|f| f.status == Status::AlreadyPresent));
    assert_eq!(names(&dir), ["batches", "data.tar.gz"]);
    // A changed member is noticed, with both checksums.
    std::fs::write(dest.join("test.bin"), b"test recordz").unwrap();
    let msg = verify_unpacked(&dest, &batch_members())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("test.bin") && msg.contains(&sha256(TEST)),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_changed_tarball_fails_verification() {
    let dir = temp_dir("corrupt");
    let mut bytes = tarball(&[("batches/train.bin", TRAIN)]);
    let (path, want) = publish(&dir, "data.tar.gz", &bytes);
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let msg = verify_file(&path, &want).unwrap_err().to_string();
    assert!(
        msg.contains("sha256 is") && msg.contains(want.sha256.as_deref().unwrap()),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_traversal_member_is_rejected_and_nothing_unpacked() {
    let dir = temp_dir("traversal");
    let bytes = tarball(&[
        ("batches/train.bin", TRAIN),
        ("batches/../../evil.bin", b"gotcha"),
        ("batches/test.bin", TEST),
    ]);
    let (path, _) = publish(&dir, "data.tar.gz", &bytes);
    let dest = dir.join("inner").join("batches");
    std::fs::create_dir_all(dir.join("inner")).unwrap();
    let msg = unpack(&path, &batch_members(), &dest)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("evil.bin") && msg.contains("outside"), "{msg}");
    assert!(
        names(&dir.join("inner")).is_empty(),
        "left behind: {:?}",
        names(&dir.join("inner"))
    );
    assert_eq!(names(&dir), ["data.tar.gz", "inner"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_member_is_reported_and_nothing_unpacked() {
    let dir = temp_dir("missing");
    let (path, _) = publish(
        &dir,
        "data.tar.gz",
        &tarball(&[("batches/train.bin", TRAIN)]),
    );
    let dest = dir.join("batches");
    let msg = unpack(&path, &batch_members(), &dest)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no member batches/test.bin"), "{msg}");
    assert_eq!(names(&dir), ["data.tar.gz"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_member_with_the_wrong_checksum_is_rejected() {
    let dir = temp_dir("member");
    let bytes = tarball(&[
        ("batches/train.bin", b"training recordz"),
        ("batches/test.bin", TEST),
    ]);
    let (path, _) = publish(&dir, "data.tar.gz", &bytes);
    let msg = unpack(&path, &batch_members(), &dir.join("batches"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("member batches/train.bin") && msg.contains(&sha256(TRAIN)),
        "{msg}"
    );
    assert_eq!(names(&dir), ["data.tar.gz"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn official_manifests_are_consistent() {
    for name in [
        FetchName::Mnist,
        FetchName::FashionMnist,
        FetchName::Cifar10,
        FetchName::Cifar100,
    ] {
        let m = official(name);
        assert!(!m.sources.is_empty() && m.sources.iter().all(|s| s.ends_with('/')));
        for f in &m.files {
            assert_eq!(f.md5.len(), 32, "{}", f.name);
            assert_eq!(f.sha256.as_ref().map(String::len), Some(64), "{}", f.name);
        }
        assert!(m.members.is_empty() || m.files.len() == 1);
        for mem in &m.members {
            assert!(
                mem.path.starts_with(&format!("{}/", m.folder)),
                "{}",
                mem.path
            );
        }
    }
    assert_eq!(
        mirror_base("http://h:1/", "mnist").unwrap(),
        "http://h:1/mnist/"
    );
    assert!(mirror_base("ftp://h/", "mnist").is_err());
}

#[test]
fn fetch_unpacks_a_verified_tarball_found_in_the_folder_then_is_a_no_op() {
    let root = temp_dir("fetch");
    let bytes = tarball(&[("batches/train.bin", TRAIN), ("batches/test.bin", TEST)]);
    let (_, want) = publish(&root, "data.tar.gz", &bytes);
    let manifest = Manifest {
        name: "toy".into(),
        folder: "batches".into(),
        // Nothing listens there: the test passes only if nothing is downloaded.
        sources: vec!["http://127.0.0.1:1/".into()],
        files: vec![want],
        members: batch_members(),
    };
    let report = fetch(&manifest, &root, None).unwrap();
    assert_eq!(report.folder, root.join("batches"));
    assert_eq!(report.archive.unwrap().status, Status::AlreadyPresent);
    assert_eq!(names(&root), ["batches", "data.tar.gz"]);
    let again = fetch(&manifest, &root, None).unwrap();
    assert!(again.already_present() && again.archive.is_none());
    // A folder that cannot be verified is left alone, with a message saying what to do.
    std::fs::remove_file(root.join("batches").join(SUMS_FILE)).unwrap();
    let msg = fetch(&manifest, &root, None).unwrap_err().to_string();
    assert!(msg.contains("move it away"), "{msg}");
    std::fs::remove_dir_all(&root).unwrap();
}
