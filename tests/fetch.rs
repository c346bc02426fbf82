//! `darts data fetch` end to end through the binary, against an HTTP server on 127.0.0.1 that
//! serves the local datasets folder (`<base>/mnist/<file>`, the layout a `--mirror` has): byte
//! identical files, a second run that downloads nothing, corrupted and truncated transfers that
//! leave nothing behind, and a search on the fetched files.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How the server answers.
#[derive(Clone, Copy)]
enum Mode {
    Normal,
    /// Flip one byte in the middle of every body.
    Corrupt,
    /// Announce the full Content-Length, send half the body and close.
    Truncate,
}

/// A one-thread HTTP/1.1 server for the files under `root`; it stops when dropped, and by itself
/// after two minutes.
struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(root: &Path, mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let (requests, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (root, count, halt) = (root.to_path_buf(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            while !halt.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        let _ = answer(stream, &root, mode);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            base,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one GET request for a file under `root` and closes the connection.
fn answer(stream: TcpStream, root: &Path, mode: Mode) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let file = root.join(path.trim_start_matches('/'));
    let mut out = stream;
    let body = match std::fs::read(&file) {
        Ok(body) if !path.contains("..") => body,
        _ => {
            let msg = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            return out.write_all(msg.as_bytes());
        }
    };
    let mut sent = body.clone();
    let n = sent.len();
    match mode {
        Mode::Normal => {}
        Mode::Corrupt => sent[n / 2] ^= 0x01,
        Mode::Truncate => sent.truncate(n / 2),
    }
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&sent)?;
    out.flush()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("darts-fetch-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn darts(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_darts"))
        .args(args)
        .env_remove("DARTS_DATA_MIRROR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn fetch(name: &str, server: &Server, dir: &Path) -> Output {
    let dir = dir.to_str().unwrap();
    darts(&[
        "data",
        "fetch",
        name,
        "--mirror",
        &server.base,
        "--data-dir",
        dir,
        "--json",
    ])
}

fn sha256_file(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `--json` object on the last stdout line.
fn report(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("no stdout")).unwrap()
}

/// Every file under `dir` (recursively), as paths relative to it.
fn all_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                found.extend(all_files(&path));
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// Fetches `dataset` into a folder that does not exist yet and checks every file against the
/// source; returns the folder.
fn fetch_matches_source(dataset: &str, source: &Path, server: &Server) -> PathBuf {
    let dir = tmp(dataset).join("new").join("datasets");
    let out = fetch(dataset, server, &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json = report(&out);
    assert_eq!(json["dataset"], dataset);
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    for f in files {
        let name = f["name"].as_str().unwrap();
        let want = sha256_file(&source.join(dataset).join(name));
        let got = sha256_file(&dir.join(dataset).join(name));
        println!("{dataset}/{name}: source {want} fetched {got}");
        assert_eq!(got, want, "{name}");
        assert_eq!(f["sha256"], want.as_str());
        assert_eq!(f["status"], "downloaded");
    }
    assert_eq!(all_files(&dir).len(), 4, "{:?}", all_files(&dir));
    dir
}

#[test]
fn fetch_mnist_from_a_mirror_then_search_on_it() {
    let Some(source) = darts::data::test_data("mnist") else {
        return;
    };
    let server = Server::start(&source, Mode::Normal);
    let dir = fetch_matches_source("mnist", &source, &server);
    assert_eq!(server.requests(), 4);

    // A second run, with the mirror from the environment this time, downloads nothing.
    let again = Command::new(env!("CARGO_BIN_EXE_darts"))
        .args(["data", "fetch", "mnist", "--json", "--data-dir"])
        .arg(&dir)
        .env("DARTS_DATA_MIRROR", &server.base)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("already present and verified"), "{stderr}");
    assert_eq!(server.requests(), 4, "the second run downloaded again");
    let json = report(&again);
    assert!(json["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["status"] == "already-present"));

    let run = tmp("mnist-search");
    let dir_s = dir.to_str().unwrap();
    let out = darts(&[
        "search",
        "--dataset",
        "mnist",
        "--data-dir",
        dir_s,
        "--channels",
        "4",
        "--layers",
        "2",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--threads",
        "2",
        "--out",
        run.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("60000 train / 10000 test images from"),
        "{stderr}"
    );
    // The run records the files it read.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let files = config["data_files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    assert!(files[0]
        .as_str()
        .unwrap()
        .ends_with("mnist/train-images-idx3-ubyte.gz"));
    // A config.json from before the files were recorded still loads.
    let mut old = config.clone();
    old.as_object_mut().unwrap().remove("data_files");
    let cfg: darts::nas::search::SearchConfig = serde_json::from_value(old).unwrap();
    assert!(cfg.data_files.is_empty());
    let _ = std::fs::remove_dir_all(tmp("mnist"));
    let _ = std::fs::remove_dir_all(&run);
}

/// Runs a fetch of MNIST against a misbehaving server; checks that it fails with one line
/// naming the first file and leaves no file behind; returns that line.
fn rejected(mode: Mode, name: &str) -> Option<String> {
    let source = darts::data::test_data("mnist")?;
    let server = Server::start(&source, mode);
    let dir = tmp(name);
    let out = fetch("mnist", &server, &dir);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap().to_string();
    println!("{last}");
    assert!(
        last.starts_with("error: ") && last.contains("train-images-idx3-ubyte.gz"),
        "{stderr}"
    );
    assert!(
        last.contains("nothing was kept") && last.contains("--mirror"),
        "{last}"
    );
    assert!(
        all_files(&dir).is_empty(),
        "left behind: {:?}",
        all_files(&dir)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Some(last)
}

#[test]
fn fetch_rejects_a_corrupted_transfer() {
    if let Some(line) = rejected(Mode::Corrupt, "corrupt") {
        let want = "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609";
        assert!(
            line.contains("sha256 is ") && line.contains(&format!("expected {want}")),
            "{line}"
        );
    }
}

#[test]
fn fetch_rejects_a_truncated_transfer() {
    if let Some(line) = rejected(Mode::Truncate, "truncated") {
        assert!(line.contains("of 9912422 bytes"), "{line}");
    }
}

#[test]
fn fetch_reports_each_missing_file() {
    let Some(source) = darts::data::test_data("mnist") else {
        return;
    };
    // The server's root is one level too deep, so every file is a 404.
    let server = Server::start(&source.join("mnist"), Mode::Normal);
    let dir = tmp("404");
    let out = fetch("mnist", &server, &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("mnist/train-images-idx3-ubyte.gz: HTTP status 404"),
        "{stderr}"
    );
    assert!(all_files(&dir).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fetch_fashion_mnist_from_a_mirror_and_verify_it() {
    let Some(source) = darts::data::test_data("fashion-mnist") else {
        return;
    };
    let server = Server::start(&source, Mode::Normal);
    let dir = fetch_matches_source("fashion-mnist", &source, &server);
    // A file changed on disk is found out and downloaded again.
    let labels = dir.join("fashion-mnist/t10k-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&labels).unwrap();
    bytes[100] ^= 0x80;
    std::fs::write(&labels, &bytes).unwrap();
    let out = fetch("fashion-mnist", &server, &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("t10k-labels-idx1-ubyte.gz: sha256 is"),
        "{stderr}"
    );
    let json = report(&out);
    let statuses: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "already-present",
            "already-present",
            "already-present",
            "downloaded"
        ]
    );
    assert_eq!(
        sha256_file(&labels),
        sha256_file(&source.join("fashion-mnist/t10k-labels-idx1-ubyte.gz"))
    );
    let _ = std::fs::remove_dir_all(tmp("fashion-mnist"));
}
