//! The NAS-Bench-201 table (`nb201.csv`): read and checked once, then looked up by arch or by
//! index and ranked by any column, so a search strategy can score a cell without training it.
//!
//! The file is plain comma-separated text (no quoting: arch strings hold no commas) with a
//! header; columns are found by name. `arch` and `index` are required, and so are the columns the
//! CLI shows (`cifar10_test`, `cifar10_valid`, `params_m`, `flops_m`); every other column must be
//! numeric too and is kept by name. Row *i* must have index *i*.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::cli::Nb201LookupArgs;
use crate::error::{Error, Result};
use crate::nas::space::nb201::Nb201Arch;

/// Where the table lives inside the datasets folder.
pub const TABLE_FILE: &str = "nb201/nb201.csv";

/// Columns every table must have.
pub const REQUIRED_COLUMNS: [&str; 6] = [
    "arch",
    "index",
    "cifar10_test",
    "cifar10_valid",
    "params_m",
    "flops_m",
];

/// The table in memory: one arch per row, and each numeric column as one vector.
#[derive(Debug)]
pub struct Bench201 {
    path: PathBuf,
    archs: Vec<Nb201Arch>,
    by_arch: HashMap<Nb201Arch, usize>,
    /// The numeric columns except `index`, in file order.
    columns: Vec<String>,
    /// `values[c][i]`: column `c` of row `i`.
    values: Vec<Vec<f64>>,
}

/// One row with all its columns by name (file order), as `darts nb201 lookup` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub index: usize,
    pub arch: Nb201Arch,
    pub values: Vec<(String, f64)>,
}

impl Row {
    /// The value of `column`, if the table has it.
    pub fn get(&self, column: &str) -> Option<f64> {
        self.values
            .iter()
            .find(|(name, _)| name == column)
            .map(|&(_, v)| v)
    }
}

/// A flat JSON object: `arch`, `index`, then every column by name.
impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.values.len() + 2))?;
        map.serialize_entry("arch", &self.arch)?;
        map.serialize_entry("index", &self.index)?;
        for (name, v) in &self.values {
            map.serialize_entry(name, v)?;
        }
        map.end()
    }
}

/// What `darts nb201 lookup --json` prints: the row and its ranks on CIFAR-10.
#[derive(Debug, Serialize)]
pub struct Lookup {
    #[serde(flatten)]
    pub row: Row,
    pub rank_cifar10_test: usize,
    pub rank_cifar10_valid: usize,
}

/// The message of an error without its kind's prefix, to nest it in a line-numbered data error.
fn message(e: Error) -> String {
    match e {
        Error::InvalidArgument(msg) => msg,
        other => other.to_string(),
    }
}

impl Bench201 {
    /// `$DARTS_DATA_DIR/nb201/nb201.csv`, else the table in the datasets folder that
    /// [`crate::data::data_dir`] finds; an error saying what to pass when it is not there.
    pub fn default_path() -> Result<PathBuf> {
        let path = crate::data::data_dir(None)
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "no NB201 table: {}; or pass --benchmark FILE",
                    message(e)
                ))
            })?
            .join(TABLE_FILE);
        if !path.is_file() {
            return Err(Error::data(
                path,
                format!(
                    "no NB201 table here; pass --benchmark FILE or set {} to the folder holding \
                     {TABLE_FILE}",
                    crate::data::DATA_DIR_ENV
                ),
            ));
        }
        Ok(path)
    }

    /// Reads and checks the whole table; any bad line is an [`Error::Data`] naming its number.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |line: usize, msg: String| Error::data(path, format!("line {line}: {msg}"));
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut lines = text.lines();
        let header: Vec<&str> = match lines.next() {
            Some(h) if !h.is_empty() => h.split(',').collect(),
            _ => return Err(bad(1, "empty, expected a header naming the columns".into())),
        };
        for (i, name) in header.iter().enumerate() {
            if header[..i].contains(name) {
                return Err(bad(1, format!("column `{name}` appears twice")));
            }
        }
        if let Some(missing) = REQUIRED_COLUMNS.iter().find(|c| !header.contains(c)) {
            return Err(bad(
                1,
                format!(
                    "missing column `{missing}` (the header has {}; required: {})",
                    header.join(", "),
                    REQUIRED_COLUMNS.join(", ")
                ),
            ));
        }
        // Both are there: the required columns were just checked.
        let position = |name| header.iter().position(|&h| h == name).unwrap_or_default();
        let (arch_col, index_col) = (position("arch"), position("index"));
        let value_cols: Vec<usize> = (0..header.len())
            .filter(|&c| c != arch_col && c != index_col)
            .collect();
        let mut table = Bench201 {
            path: path.to_path_buf(),
            archs: Vec::new(),
            by_arch: HashMap::new(),
            columns: value_cols.iter().map(|&c| header[c].to_string()).collect(),
            values: vec![Vec::new(); value_cols.len()],
        };
        let mut fields = Vec::with_capacity(header.len());
        for (row, text) in lines.enumerate() {
            let line = row + 2;
            fields.clear();
            fields.extend(text.split(','));
            if fields.len() != header.len() {
                return Err(bad(
                    line,
                    format!(
                        "{} fields, expected {} (one per header column)",
                        fields.len(),
                        header.len()
                    ),
                ));
            }
            let arch: Nb201Arch = fields[arch_col]
                .parse()
                .map_err(|e| bad(line, message(e)))?;
            let index = fields[index_col];
            if index.parse::<usize>().ok() != Some(row) {
                return Err(bad(
                    line,
                    format!("index `{index}` on row {row}: row i must have index i"),
                ));
            }
            if let Some(first) = table.by_arch.insert(arch, row) {
                return Err(bad(
                    line,
                    format!("arch {arch} repeats line {} (index {first})", first + 2),
                ));
            }
            table.archs.push(arch);
            for (&c, column) in value_cols.iter().zip(&mut table.values) {
                let v = fields[c]
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        bad(
                            line,
                            format!(
                                "column `{}`: `{}` is not a finite number",
                                header[c], fields[c]
                            ),
                        )
                    })?;
                column.push(v);
            }
        }
        if table.archs.is_empty() {
            return Err(bad(2, "no rows after the header".into()));
        }
        Ok(table)
    }

    /// The file the table was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of rows (15,625 for the full benchmark).
    pub fn len(&self) -> usize {
        self.archs.len()
    }

    /// Never true for a loaded table (an empty one is a load error); here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.archs.is_empty()
    }

    /// The numeric column names other than `index`, in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index < self.len() {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "index {index} is out of range: {} has indices 0..={}",
            self.path.display(),
            self.len() - 1
        )))
    }

    /// The arch of row `index`.
    pub fn arch(&self, index: usize) -> Result<Nb201Arch> {
        self.check_index(index)?;
        Ok(self.archs[index])
    }

    /// The row index (the NB201 arch index) of `arch`.
    pub fn index_of(&self, arch: &Nb201Arch) -> Result<usize> {
        self.by_arch.get(arch).copied().ok_or_else(|| {
            Error::InvalidArgument(format!("arch {arch} is not in {}", self.path.display()))
        })
    }

    /// Every row's value of `column`, by index.
    pub fn column(&self, column: &str) -> Result<&[f64]> {
        match self.columns.iter().position(|c| c == column) {
            Some(c) => Ok(&self.values[c]),
            None => Err(Error::InvalidArgument(format!(
                "{} has no column `{column}`; its columns: {}",
                self.path.display(),
                self.columns.join(", ")
            ))),
        }
    }

    /// Row `index`'s value of `column`.
    pub fn value(&self, index: usize, column: &str) -> Result<f64> {
        let values = self.column(column)?;
        self.check_index(index)?;
        Ok(values[index])
    }

    /// Row `index`'s rank by `column`, descending: 1 is the highest value; ties share the
    /// better rank and the next distinct value skips past them (1, 2, 2, 4).
    pub fn rank(&self, index: usize, column: &str) -> Result<usize> {
        let v = self.value(index, column)?;
        Ok(1 + self.column(column)?.iter().filter(|&&w| w > v).count())
    }

    /// Row `index` with every column by name.
    pub fn row(&self, index: usize) -> Result<Row> {
        self.check_index(index)?;
        let values = self
            .columns
            .iter()
            .zip(&self.values)
            .map(|(name, column)| (name.clone(), column[index]))
            .collect();
        Ok(Row {
            index,
            arch: self.archs[index],
            values,
        })
    }

    /// The row a user means: an integer is an index, anything else must be an arch string.
    pub fn resolve(&self, query: &str) -> Result<usize> {
        let digits = query.strip_prefix('-').unwrap_or(query);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return self.index_of(&query.parse()?);
        }
        match query.parse::<usize>() {
            Ok(index) => self.check_index(index).map(|()| index),
            Err(_) => Err(Error::InvalidArgument(format!(
                "index {query} is out of range: {} has indices 0..={}",
                self.path.display(),
                self.len() - 1
            ))),
        }
    }

    /// The row `query` names with its ranks by `cifar10_test` and `cifar10_valid`.
    pub fn lookup(&self, query: &str) -> Result<Lookup> {
        let index = self.resolve(query)?;
        Ok(Lookup {
            row: self.row(index)?,
            rank_cifar10_test: self.rank(index, "cifar10_test")?,
            rank_cifar10_valid: self.rank(index, "cifar10_valid")?,
        })
    }
}

/// The unit a column is shown in: the size columns are in millions, and every other column of
/// the benchmark is a top-1 accuracy in percent (as in the file, not a fraction).
fn unit(column: &str) -> &'static str {
    match column {
        "params_m" => "M params",
        "flops_m" => "MFLOPs",
        _ => "%",
    }
}

/// An aligned listing of a looked-up row, one column a line.
pub fn render(lookup: &Lookup, rows: usize) -> String {
    let row = &lookup.row;
    let width = row.values.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out = format!("{:width$}  {}\n", "arch", row.arch);
    out += &format!("{:width$}  {}\n", "index", row.index);
    for (name, v) in &row.values {
        let rank = match name.as_str() {
            "cifar10_test" => Some(lookup.rank_cifar10_test),
            "cifar10_valid" => Some(lookup.rank_cifar10_valid),
            _ => None,
        };
        let line = format!("{name:width$}  {:>10} {:<8}", v.to_string(), unit(name));
        out += match rank {
            Some(r) => format!("{line}  rank {r} of {rows}\n"),
            None => format!("{}\n", line.trim_end()),
        }
        .as_str();
    }
    out
}

/// `darts nb201 lookup`.
pub fn run_lookup(a: &Nb201LookupArgs) -> Result<()> {
    let path = match &a.benchmark {
        Some(p) => p.clone(),
        None => Bench201::default_path()?,
    };
    let table = Bench201::load(&path)?;
    let lookup = table.lookup(&a.arch)?;
    if a.json {
        let s = serde_json::to_string(&lookup)
            .map_err(|e| Error::InvalidArgument(format!("serialising the row: {e}")))?;
        println!("{s}");
    } else {
        print!("{}", render(&lookup, table.len()));
    }
    Ok(())
}
