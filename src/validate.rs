//! The checks every run config's `validate()` is made of. Each names the command-line flag, so
//! that flags, a resumed `config.json` and generated trials get the same one-line error.

use crate::error::{Error, Result};

fn invalid(flag: &str, rule: &str, got: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("--{flag} must be {rule} (got {got})"))
}

/// A count of at least 1 (epochs, batch size, channels).
pub fn count(flag: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(invalid(flag, "at least 1", v));
    }
    Ok(())
}

/// A finite value above zero (learning rates, clipping norms).
pub fn positive(flag: &str, v: f32) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(invalid(flag, "finite and above 0", v));
    }
    Ok(())
}

/// A finite value of at least zero (weight decay, loss weights).
pub fn non_negative(flag: &str, v: f32) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(invalid(flag, "finite and at least 0", v));
    }
    Ok(())
}

/// A value in [0, 1) (momentum, drop probabilities).
pub fn unit(flag: &str, v: f32) -> Result<()> {
    if !(0.0..1.0).contains(&v) {
        return Err(invalid(flag, "in [0, 1)", v));
    }
    Ok(())
}

/// A value strictly between 0 and 1 (a split fraction).
pub fn open_unit(flag: &str, v: f32) -> Result<()> {
    if !(v > 0.0 && v < 1.0) {
        return Err(invalid(flag, "strictly between 0 and 1", v));
    }
    Ok(())
}

/// A schedule's floor: at least 0 and at most the starting value of `--{of}`.
pub fn floor(flag: &str, v: f32, of: &str, start: f32) -> Result<()> {
    non_negative(flag, v)?;
    if v > start {
        return Err(invalid(flag, &format!("at most --{of} ({start})"), v));
    }
    Ok(())
}

/// A data folder only where the dataset reads files: the built-in set is generated.
pub fn data(spec: &crate::data::DataSpec) -> Result<()> {
    if spec.kind == crate::data::DatasetKind::Builtin && spec.dir.is_some() {
        return Err(Error::InvalidArgument(
            "--data-dir: the built-in dataset is generated and reads no files; name the \
             dataset with --dataset"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_rejects_its_edge_cases_and_names_the_flag() {
        assert!(count("epochs", 1).is_ok());
        assert!(count("epochs", 0)
            .unwrap_err()
            .to_string()
            .contains("--epochs"));
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(positive("lr", bad).is_err(), "{bad}");
        }
        for bad in [-1e-9, f32::NAN, f32::NEG_INFINITY, f32::INFINITY] {
            assert!(non_negative("weight-decay", bad).is_err(), "{bad}");
        }
        assert!(non_negative("weight-decay", 0.0).is_ok());
        for bad in [-0.1, 1.0, f32::NAN] {
            assert!(unit("momentum", bad).is_err(), "{bad}");
        }
        assert!(unit("momentum", 0.0).is_ok());
        for bad in [0.0, 1.0, f32::NAN] {
            assert!(open_unit("train-portion", bad).is_err(), "{bad}");
        }
        let e = floor("lr-min", 0.5, "lr", 0.1).unwrap_err().to_string();
        assert!(e.contains("--lr-min") && e.contains("--lr (0.1)"), "{e}");
        assert!(floor("lr-min", -0.1, "lr", 0.1).is_err());
        assert!(floor("lr-min", 0.1, "lr", 0.1).is_ok());
    }
}
