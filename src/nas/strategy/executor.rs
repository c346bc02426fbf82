//! Where trials run. A trial is one `darts` command (a `darts train`) with its own folder; an
//! [`Executor`] runs it to completion and re-runs it when its process dies, so a killed or
//! crashed worker costs time, not the trial. [`LocalPool`] runs up to N child processes of the
//! current executable at once; callers queue for a free slot. A cluster job system would be
//! another `Executor`: submit the same command, wait for its exit.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

/// Test hook: when this names a marker file that does not exist yet, the first trial process
/// to start training creates it and is killed (SIGKILL), as a crashed or preempted worker would
/// be; tests use it to show that the trial is run again, not lost.
pub const KILL_ONCE_ENV: &str = "DARTS_TEST_KILL_TRIAL_ONCE";

/// One trial: the `darts` arguments and the folder that holds its output and logs.
#[derive(Clone, Debug)]
pub struct Task {
    pub args: Vec<String>,
    pub dir: PathBuf,
}

/// Runs trials; `run` blocks its caller until the trial has finished (callers on several
/// threads run trials in parallel, as many at a time as the executor allows).
pub trait Executor: Sync {
    fn run(&self, task: &Task) -> Result<()>;
    /// Trials it runs at once.
    fn slots(&self) -> usize;
}

/// Child processes of this executable on this machine, at most `slots` at once; a trial whose
/// process exits non-zero or is killed is started again, up to `retries` more times.
pub struct LocalPool {
    exe: PathBuf,
    slots: usize,
    retries: usize,
    busy: Mutex<usize>,
    freed: Condvar,
}

impl LocalPool {
    pub fn new(slots: usize, retries: usize) -> Result<Self> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::InvalidArgument(format!("finding the darts executable: {e}")))?;
        Ok(LocalPool {
            exe,
            slots: slots.max(1),
            retries,
            busy: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// Waits for a free slot; the guard frees it when dropped, also on an error path.
    fn acquire(&self) -> Slot<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= self.slots {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy += 1;
        Slot(self)
    }

    /// One attempt: the process's exit status, its output appended to the trial's logs.
    fn attempt(&self, task: &Task) -> Result<std::process::ExitStatus> {
        let log = |name: &str| {
            let path = task.dir.join(name);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))
        };
        let mut child = Command::new(&self.exe)
            .args(&task.args)
            .stdin(Stdio::null())
            .stdout(log("stdout.log")?)
            .stderr(log("stderr.log")?)
            .spawn()
            .map_err(|e| Error::io(&self.exe, e))?;
        if let Some(marker) = std::env::var_os(KILL_ONCE_ENV) {
            kill_once(&mut child, &task.dir, Path::new(&marker))?;
        }
        child.wait().map_err(|e| Error::io(&self.exe, e))
    }
}

/// The [`KILL_ONCE_ENV`] hook: unless `marker` exists, creates it and kills `child` once it has
/// built its network (`darts train` writes `genotype.json` into `dir` just before training).
fn kill_once(child: &mut Child, dir: &Path, marker: &Path) -> Result<()> {
    let first = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marker)
        .is_ok();
    if !first {
        return Ok(());
    }
    while !dir.join("genotype.json").exists() {
        if child.try_wait().map_err(|e| Error::io(dir, e))?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().map_err(|e| Error::io(dir, e))
}

struct Slot<'a>(&'a LocalPool);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(|p| p.into_inner());
        *busy -= 1;
        self.0.freed.notify_one();
    }
}

impl Executor for LocalPool {
    fn run(&self, task: &Task) -> Result<()> {
        std::fs::create_dir_all(&task.dir).map_err(|e| Error::io(&task.dir, e))?;
        let _slot = self.acquire();
        let mut status = None;
        for attempt in 0..=self.retries {
            let s = self.attempt(task)?;
            if s.success() {
                return Ok(());
            }
            if attempt < self.retries {
                eprintln!(
                    "trial {} exited with {s}; running it again",
                    task.dir.display()
                );
            }
            status = Some(s);
        }
        Err(Error::InvalidArgument(format!(
            "trial {} failed {} times (last: {}); see its stderr.log",
            task.dir.display(),
            self.retries + 1,
            status.map_or("no status".into(), |s| s.to_string())
        )))
    }

    fn slots(&self) -> usize {
        self.slots
    }
}

/// `f` on every item at once, one scoped thread each (they wait on the executor's slots), the
/// results in item order; a thread that panicked is an error rather than a lost trial.
pub(crate) fn each_in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items.iter().map(|x| s.spawn(move || f(x))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::InvalidArgument("a trial thread panicked".into()))
                })
            })
            .collect()
    })
}
