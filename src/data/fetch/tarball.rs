//! The tarball half of `darts data fetch`: unpacking only the members the readers need, safely,
//! and checking them again later against the `SHA256SUMS` written beside them.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{file_report, hash_stream, hex, FileReport, Member, Partial, Status, SUMS_FILE};
use crate::error::{Error, Result};

/// The archive path as plain components, or `None` when it could point outside the folder it
/// is unpacked into (`..`, an absolute path, a drive prefix).
fn plain_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The file name a member is unpacked under.
fn member_name(m: &Member) -> &str {
    m.path.rsplit('/').next().unwrap_or(&m.path)
}

/// Unpacks `members` of the gzipped tarball `tarball` into the new folder `dest` (through a
/// temporary folder renamed at the end), checking each member's size and SHA-256 where known,
/// and writes their SHA-256s to `dest/SHA256SUMS`. A member whose path leaves the archive, a
/// needed member that is not a regular file, or a missing member is an error, and then nothing
/// is left behind.
pub fn unpack(tarball: &Path, members: &[Member], dest: &Path) -> Result<Vec<FileReport>> {
    let bad = |msg: String| Error::data(tarball, msg);
    let tmp = Partial::new(dest);
    std::fs::create_dir_all(&tmp.path).map_err(|e| Error::io(&tmp.path, e))?;
    let file = File::open(tarball).map_err(|e| Error::io(tarball, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let mut found: Vec<Option<FileReport>> = vec![None; members.len()];
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a readable tarball: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a readable tarball: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| bad(format!("member with a bad path: {e}")))?
            .into_owned();
        let path = plain_path(&raw).ok_or_else(|| {
            bad(format!(
                "member {} points outside the archive; nothing was unpacked",
                raw.display()
            ))
        })?;
        let Some(i) = members.iter().position(|m| Path::new(&m.path) == path) else {
            continue;
        };
        let m = &members[i];
        if !entry.header().entry_type().is_file() || found[i].is_some() {
            return Err(bad(format!("member {} is not one regular file", m.path)));
        }
        let name = member_name(m);
        let out_path = tmp.path.join(name);
        let mut out = File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
        let mut sha = Sha256::new();
        let bytes = hash_stream(&mut entry, |b| {
            sha.update(b);
            out.write_all(b)
        })
        .map_err(|e| bad(format!("member {}: {e}", m.path)))?;
        out.sync_all().map_err(|e| Error::io(&out_path, e))?;
        let sha256 = hex(&sha.finalize());
        check_member(
            m,
            &format!("{}: member {}", tarball.display(), m.path),
            bytes,
            &sha256,
        )?;
        found[i] = Some(file_report(name, bytes, sha256, Status::Downloaded));
    }
    let missing: Vec<&str> = members
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(m, _)| m.path.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "has no member {}; nothing was unpacked",
            missing.join(", ")
        )));
    }
    let files: Vec<FileReport> = found.into_iter().flatten().collect();
    let sums: String = files
        .iter()
        .map(|f| format!("{}  {}\n", f.sha256, f.name))
        .collect();
    let sums_path = tmp.path.join(SUMS_FILE);
    std::fs::write(&sums_path, sums).map_err(|e| Error::io(&sums_path, e))?;
    tmp.persist(dest)?;
    Ok(files)
}

/// Checks an unpacked member's size and, where published, its SHA-256.
fn check_member(m: &Member, what: &str, bytes: u64, sha256: &str) -> Result<()> {
    if let Some(size) = m.size.filter(|&s| s != bytes) {
        return Err(Error::data(
            what,
            format!("has {bytes} bytes, expected {size}"),
        ));
    }
    if let Some(expected) = m.sha256.as_ref().filter(|e| *e != sha256) {
        return Err(Error::Checksum {
            what: what.into(),
            algorithm: "sha256",
            expected: expected.clone(),
            actual: sha256.into(),
        });
    }
    Ok(())
}

/// Checks unpacked members in `dir` against their published SHA-256s and the `SHA256SUMS`
/// written when they were unpacked.
pub fn verify_unpacked(dir: &Path, members: &[Member]) -> Result<Vec<FileReport>> {
    let sums_path = dir.join(SUMS_FILE);
    let sums = std::fs::read_to_string(&sums_path).map_err(|e| Error::io(&sums_path, e))?;
    let recorded = |name: &str| {
        sums.lines()
            .filter_map(|l| l.split_once("  "))
            .find(|(_, n)| *n == name)
            .map(|(sha, _)| sha.to_string())
    };
    let mut files = Vec::new();
    for m in members {
        let name = member_name(m);
        let path = dir.join(name);
        let expected = recorded(name)
            .ok_or_else(|| Error::data(&sums_path, format!("has no checksum for {name}")))?;
        let mut sha = Sha256::new();
        let bytes = hash_stream(File::open(&path).map_err(|e| Error::io(&path, e))?, |b| {
            sha.update(b);
            Ok(())
        })
        .map_err(|e| Error::io(&path, e))?;
        let sha256 = hex(&sha.finalize());
        let what = path.display().to_string();
        check_member(m, &what, bytes, &sha256)?;
        if sha256 != expected {
            return Err(Error::Checksum {
                what,
                algorithm: "sha256",
                expected,
                actual: sha256,
            });
        }
        files.push(file_report(name, bytes, sha256, Status::AlreadyPresent));
    }
    Ok(files)
}
