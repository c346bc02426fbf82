//! What scores an architecture. A strategy sees only the search signal; the final report shows
//! the held-out test accuracy of the arch the signal chose. The table evaluator follows the
//! NAS-Bench-201 protocol: signal `cifar10_valid` (or the 12-epoch column), report
//! `cifar10_test`. Scores are cached by the arch's key, since a strategy may ask twice.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::bench201::Bench201;
use crate::error::{Error, Result};
use crate::nas::space::nb201::Nb201Arch;

/// Scores architectures of type `A` (accuracies in percent).
pub trait Evaluator<A>: Sync {
    /// The search signal the strategy is told.
    fn signal(&self, arch: &A) -> Result<f64>;
    /// The final, held-out accuracy of a chosen arch (never shown to a strategy).
    fn test(&self, arch: &A) -> Result<f64>;
    /// The signals of several archs; an evaluator that can score them in parallel does.
    fn signals(&self, archs: &[A]) -> Result<Vec<f64>> {
        archs.iter().map(|a| self.signal(a)).collect()
    }
}

/// The NAS-Bench-201 table, read by column name.
pub struct TableEvaluator<'a> {
    table: &'a Bench201,
    signal: &'a [f64],
    test: &'a [f64],
}

impl<'a> TableEvaluator<'a> {
    /// Errors name the table and list its columns when `signal` or `test` is not one of them.
    pub fn new(table: &'a Bench201, signal: &str, test: &str) -> Result<Self> {
        Ok(TableEvaluator {
            table,
            signal: table.column(signal)?,
            test: table.column(test)?,
        })
    }
}

impl Evaluator<Nb201Arch> for TableEvaluator<'_> {
    fn signal(&self, arch: &Nb201Arch) -> Result<f64> {
        Ok(self.signal[self.table.index_of(arch)?])
    }

    fn test(&self, arch: &Nb201Arch) -> Result<f64> {
        Ok(self.test[self.table.index_of(arch)?])
    }
}

/// Remembers every signal by the arch's text form, so a repeated query costs nothing.
pub struct Cached<E> {
    inner: E,
    signals: Mutex<HashMap<String, f64>>,
}

impl<E> Cached<E> {
    pub fn new(inner: E) -> Self {
        Cached {
            inner,
            signals: Mutex::new(HashMap::new()),
        }
    }

    pub fn inner(&self) -> &E {
        &self.inner
    }
}

impl<A: std::fmt::Display + Clone, E: Evaluator<A>> Evaluator<A> for Cached<E> {
    fn signal(&self, arch: &A) -> Result<f64> {
        let key = arch.to_string();
        let hit = self.signals.lock().ok().and_then(|m| m.get(&key).copied());
        if let Some(v) = hit {
            return Ok(v);
        }
        // Evaluated outside the lock: a real training trial must not block the other runs.
        let v = self.inner.signal(arch)?;
        if let Ok(mut m) = self.signals.lock() {
            m.insert(key, v);
        }
        Ok(v)
    }

    fn test(&self, arch: &A) -> Result<f64> {
        self.inner.test(arch)
    }

    /// Scores the archs not cached, each distinct one once, in one call of the inner evaluator.
    fn signals(&self, archs: &[A]) -> Result<Vec<f64>> {
        let keys: Vec<String> = archs.iter().map(|a| a.to_string()).collect();
        let known = |k: &String| self.signals.lock().ok().and_then(|m| m.get(k).copied());
        let mut missing: Vec<usize> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if known(k).is_none() && !missing.iter().any(|&j| keys[j] == *k) {
                missing.push(i);
            }
        }
        let todo: Vec<A> = missing.iter().map(|&i| archs[i].clone()).collect();
        let fresh = self.inner.signals(&todo)?;
        if let Ok(mut m) = self.signals.lock() {
            for (&i, v) in missing.iter().zip(fresh) {
                m.insert(keys[i].clone(), v);
            }
        }
        keys.iter()
            .map(|k| known(k).ok_or_else(|| Error::InvalidArgument(format!("no score for {k}"))))
            .collect()
    }
}
