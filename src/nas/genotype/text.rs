//! The reference code's text form: what `print(genotype)` shows in Python and what
//! `genotypes.py` holds. We print list literals where Python shows `range(2, 6)`, so our output
//! pastes into Python unchanged; the parser takes both, with either quote style.

use std::fmt;

use super::Genotype;
use crate::error::Error;
use crate::nas::primitives::Primitive;

impl fmt::Display for Genotype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Genotype(normal=")?;
        write_pairs(f, &self.normal)?;
        f.write_str(", normal_concat=")?;
        write_list(f, &self.normal_concat)?;
        f.write_str(", reduce=")?;
        write_pairs(f, &self.reduce)?;
        f.write_str(", reduce_concat=")?;
        write_list(f, &self.reduce_concat)?;
        f.write_str(")")
    }
}

fn write_pairs(f: &mut fmt::Formatter<'_>, pairs: &[(Primitive, usize)]) -> fmt::Result {
    f.write_str("[")?;
    for (i, (op, input)) in pairs.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        write!(f, "{sep}('{op}', {input})")?;
    }
    f.write_str("]")
}

fn write_list(f: &mut fmt::Formatter<'_>, items: &[usize]) -> fmt::Result {
    f.write_str("[")?;
    for (i, x) in items.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        write!(f, "{sep}{x}")?;
    }
    f.write_str("]")
}

const FIELDS: [&str; 4] = ["normal", "normal_concat", "reduce", "reduce_concat"];

/// A concat list never needs more states than this; the cap stops `range(0, 10**18)` from
/// allocating before validation could reject it.
const MAX_RANGE: usize = 1024;

/// Parses `Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)`.
///
/// Also accepted, as Python would: positional fields, keywords in any order, trailing commas,
/// `#` comments, tuples or lists for pairs and concat, `range(stop)` and `range(start, stop)`.
/// The `Genotype(...)` wrapper may be left out (`normal=[...], ...`), and a whole line from
/// `genotypes.py` (`DARTS_V2 = Genotype(...)`) parses too. Errors give line and column.
pub(super) fn parse(text: &str) -> Result<Genotype, String> {
    let mut p = Parser {
        text,
        toks: lex(text)?,
        pos: 0,
    };
    p.genotype()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Str(&'a str),
    Int(&'a str),
    Punct(char),
    End,
}

fn describe(tok: Tok) -> String {
    match tok {
        Tok::Ident(s) | Tok::Int(s) => format!("'{s}'"),
        Tok::Str(s) => format!("the string '{s}'"),
        Tok::Punct(c) => format!("'{c}'"),
        Tok::End => "the end of the text".into(),
    }
}

fn location(text: &str, offset: usize) -> String {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("genotype text, line {line}, column {column}")
}

/// Splits the text into tokens, each with its byte offset; the last token is `End`.
fn lex(text: &str) -> Result<Vec<(Tok<'_>, usize)>, String> {
    let mut toks = Vec::new();
    let mut i = 0;
    // Byte offset of the first char at or after `from` that fails `keep`.
    let scan = |from: usize, keep: &dyn Fn(char) -> bool| {
        text[from..]
            .find(|c| !keep(c))
            .map_or(text.len(), |n| from + n)
    };
    while let Some(c) = text[i..].chars().next() {
        let start = i;
        match c {
            c if c.is_whitespace() => i += c.len_utf8(),
            '#' => i = scan(i, &|c| c != '\n'),
            '(' | ')' | '[' | ']' | ',' | '=' => {
                toks.push((Tok::Punct(c), start));
                i += 1;
            }
            '\'' | '"' => {
                let end = scan(i + 1, &|ch| ch != c && ch != '\n');
                if !text[end..].starts_with(c) {
                    return Err(format!("{}: unterminated string", location(text, start)));
                }
                toks.push((Tok::Str(&text[start + 1..end]), start));
                i = end + 1;
            }
            '0'..='9' => {
                i = scan(i, &|c| c.is_ascii_digit());
                toks.push((Tok::Int(&text[start..i]), start));
            }
            c if c.is_alphabetic() || c == '_' => {
                i = scan(i, &|c| c.is_alphanumeric() || c == '_');
                toks.push((Tok::Ident(&text[start..i]), start));
            }
            _ => {
                return Err(format!(
                    "{}: unexpected character '{c}'",
                    location(text, start)
                ))
            }
        }
    }
    toks.push((Tok::End, text.len()));
    Ok(toks)
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<(Tok<'a>, usize)>,
    pos: usize,
}

type Parsed<T> = Result<T, String>;

impl<'a> Parser<'a> {
    fn tok(&self, ahead: usize) -> Tok<'a> {
        self.toks.get(self.pos + ahead).map_or(Tok::End, |t| t.0)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.text.len(), |t| t.1)
    }

    fn fail_at<T>(&self, offset: usize, msg: &str) -> Parsed<T> {
        Err(format!("{}: {msg}", location(self.text, offset)))
    }

    fn expected<T>(&self, what: &str) -> Parsed<T> {
        let found = describe(self.tok(0));
        self.fail_at(self.offset(), &format!("expected {what}, found {found}"))
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.tok(0) == Tok::Punct(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, c: char, what: &str) -> Parsed<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.expected(what)
        }
    }

    fn genotype(&mut self) -> Parsed<Genotype> {
        if let (Tok::Ident(_), Tok::Punct('='), Tok::Ident("Genotype")) =
            (self.tok(0), self.tok(1), self.tok(2))
        {
            self.pos += 2;
        }
        let wrapped = self.tok(0) == Tok::Ident("Genotype");
        if wrapped {
            self.pos += 1;
            self.expect('(', "'(' after 'Genotype'")?;
        } else if !matches!((self.tok(0), self.tok(1)), (Tok::Ident(_), Tok::Punct('='))) {
            return self.expected("'Genotype(' or a field such as 'normal='");
        }
        let close = if wrapped { Tok::Punct(')') } else { Tok::End };

        let (mut pairs, mut concats) = ([None, None], [None, None]);
        let (mut positional, mut keywords) = (0, false);
        while self.tok(0) != close {
            let start = self.offset();
            let field = if let (Tok::Ident(name), Tok::Punct('=')) = (self.tok(0), self.tok(1)) {
                let Some(field) = FIELDS.iter().position(|&f| f == name) else {
                    let msg = format!(
                        "unknown field '{name}'; a Genotype has {}",
                        FIELDS.join(", ")
                    );
                    return self.fail_at(start, &msg);
                };
                self.pos += 2;
                keywords = true;
                field
            } else if keywords || !wrapped {
                return self.expected("a field such as 'reduce='");
            } else if positional == FIELDS.len() {
                return self.fail_at(start, "too many fields; a Genotype has 4");
            } else {
                positional += 1;
                positional - 1
            };
            let given = if field % 2 == 0 {
                pairs[field / 2].replace(self.pairs()?).is_some()
            } else {
                concats[field / 2].replace(self.concat()?).is_some()
            };
            if given {
                let msg = format!("field '{}' given more than once", FIELDS[field]);
                return self.fail_at(start, &msg);
            }
            if !self.eat(',') {
                break;
            }
        }
        if wrapped {
            self.expect(')', "',' or ')'")?;
        }
        if self.tok(0) != Tok::End {
            return self.expected("the end of the genotype");
        }
        let missing = |i: usize| format!("genotype text: missing field '{}'", FIELDS[i]);
        let [normal, reduce] = pairs;
        let [normal_concat, reduce_concat] = concats;
        Ok(Genotype {
            normal: normal.ok_or_else(|| missing(0))?,
            normal_concat: normal_concat.ok_or_else(|| missing(1))?,
            reduce: reduce.ok_or_else(|| missing(2))?,
            reduce_concat: reduce_concat.ok_or_else(|| missing(3))?,
        })
    }

    /// Consumes `[` or `(` and returns the bracket that closes it.
    fn open(&mut self, what: &str) -> Parsed<char> {
        if self.eat('[') {
            Ok(']')
        } else if self.eat('(') {
            Ok(')')
        } else {
            self.expected(what)
        }
    }

    /// The items of a list or tuple, after its opening bracket: `item, item, ...]`.
    fn items<T>(&mut self, close: char, item: fn(&mut Self) -> Parsed<T>) -> Parsed<Vec<T>> {
        let mut out = Vec::new();
        while !self.eat(close) {
            out.push(item(self)?);
            if !self.eat(',') {
                self.expect(close, &format!("',' or '{close}'"))?;
                break;
            }
        }
        Ok(out)
    }

    fn pairs(&mut self) -> Parsed<Vec<(Primitive, usize)>> {
        let close = self.open("'[' to start a list of (op, input) pairs")?;
        self.items(close, Self::pair)
    }

    fn pair(&mut self) -> Parsed<(Primitive, usize)> {
        let close = self.open("'(' to start an (op, input) pair")?;
        let Tok::Str(name) = self.tok(0) else {
            return self.expected("a quoted op name such as 'sep_conv_3x3'");
        };
        let op = name.parse::<Primitive>().or_else(|e| {
            let msg = match e {
                Error::InvalidArgument(msg) => msg,
                other => other.to_string(),
            };
            self.fail_at(self.offset(), &msg)
        })?;
        self.pos += 1;
        self.expect(',', "',' between op and input")?;
        let input = self.int()?;
        self.eat(',');
        self.expect(close, &format!("'{close}' to end the pair"))?;
        Ok((op, input))
    }

    fn concat(&mut self) -> Parsed<Vec<usize>> {
        if self.tok(0) != Tok::Ident("range") {
            let close = self.open("a list such as [2, 3, 4, 5] or range(2, 6)")?;
            return self.items(close, Self::int);
        }
        let start = self.offset();
        self.pos += 1;
        self.expect('(', "'(' after 'range'")?;
        let first = self.int()?;
        let (lo, hi) = if self.eat(',') && self.tok(0) != Tok::Punct(')') {
            (first, self.int()?)
        } else {
            (0, first)
        };
        self.eat(',');
        self.expect(')', "')' to end the range")?;
        if hi.saturating_sub(lo) > MAX_RANGE {
            let msg = format!("range({lo}, {hi}) is too long for a concat list");
            return self.fail_at(start, &msg);
        }
        Ok((lo..hi).collect())
    }

    fn int(&mut self) -> Parsed<usize> {
        let Tok::Int(digits) = self.tok(0) else {
            return self.expected("a non-negative integer");
        };
        let Ok(value) = digits.parse() else {
            return self.fail_at(self.offset(), &format!("integer {digits} is too large"));
        };
        self.pos += 1;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference `genotypes.py` lines, verbatim.
    const V1: &str = "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])";
    const V2: &str = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])";

    fn v2() -> Genotype {
        Genotype::named("DARTS_V2").unwrap()
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn prints_the_reference_repr_and_parses_it_back() {
        for (name, text) in [("DARTS_V1", V1), ("DARTS_V2", V2)] {
            let g = Genotype::named(name).unwrap();
            assert_eq!(g.to_string(), text);
            assert_eq!(parse(&g.to_string()).unwrap(), g);
            assert_eq!(Genotype::parse(text).unwrap(), g);
        }
    }

    #[test]
    fn parses_what_python_prints_for_a_derived_genotype() {
        let text = V2.replace("[2, 3, 4, 5]", "range(2, 6)");
        assert!(text.contains("normal_concat=range(2, 6), reduce="));
        assert_eq!(parse(&text).unwrap(), v2());
    }

    #[test]
    fn parses_python_variants() {
        let multiline = "# from genotypes.py\nDARTS_V2 = Genotype(\n  normal = [\n    (\"sep_conv_3x3\", 0),\n    ('sep_conv_3x3', 1),\n    ['sep_conv_3x3', 0,],\n    ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0),\n    ('skip_connect', 0), ('dil_conv_3x3', 2),  # last node\n  ],\n  normal_concat = range(2, 6),\n  reduce_concat = (2, 3, 4, 5,),\n  reduce = [('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)],\n)\n";
        assert_eq!(parse(multiline).unwrap(), v2());
        let bare = V2
            .strip_prefix("Genotype(")
            .unwrap()
            .strip_suffix(')')
            .unwrap();
        assert_eq!(parse(bare).unwrap(), v2());
        let g = v2();
        let positional = format!(
            "Genotype({}, range(2, 6), {}, reduce_concat=[2, 3, 4, 5])",
            serde_json::to_string(&g.normal).unwrap(),
            serde_json::to_string(&g.reduce).unwrap()
        );
        assert_eq!(parse(&positional).unwrap(), g);
        assert_eq!(
            parse("normal=[], normal_concat=range(3), reduce=[], reduce_concat=[]").unwrap(),
            Genotype {
                normal: vec![],
                normal_concat: vec![0, 1, 2],
                reduce: vec![],
                reduce_concat: vec![]
            }
        );
    }

    #[test]
    fn errors_give_position_and_cause() {
        assert_eq!(
            err("hello world"),
            "genotype text, line 1, column 1: expected 'Genotype(' or a field such as 'normal=', found 'hello'"
        );
        assert_eq!(err(""), "genotype text, line 1, column 1: expected 'Genotype(' or a field such as 'normal=', found the end of the text");
        let unknown = V2.replace("('dil_conv_3x3', 2)", "('sep_conv_7x7', 2)");
        let e = err(&unknown);
        assert!(e.starts_with("genotype text, line 1, column 166: unknown primitive 'sep_conv_7x7'; valid names: none,"), "{e}");
        let e = err("Genotype(\n  normal=[('sep_conv_3x3' 0)]");
        assert_eq!(
            e,
            "genotype text, line 2, column 27: expected ',' between op and input, found '0'"
        );
        let e = err("Genotype(normal=[('skip_connect', 0)], normal_concat=[2], reduce=[])");
        assert_eq!(e, "genotype text: missing field 'reduce_concat'");
        let e = err(&V2.replace("reduce=", "normal="));
        assert!(e.ends_with("field 'normal' given more than once"), "{e}");
        let e = err(&V2.replace("reduce=", "reduction="));
        assert!(e.ends_with("unknown field 'reduction'; a Genotype has normal, normal_concat, reduce, reduce_concat"), "{e}");
        assert!(err("Genotype(normal=[('skip_connect, 0)])")
            .ends_with("column 19: unterminated string"));
        assert!(
            err("Genotype(normal=[('skip_connect', -1)])").ends_with("unexpected character '-'")
        );
        assert!(err(&format!("{V2} extra"))
            .ends_with("expected the end of the genotype, found 'extra'"));
        assert!(err(&format!("{V2})")).ends_with("expected the end of the genotype, found ')'"));
        assert!(err(&V2
            .replace("range", "")
            .replace("[2, 3, 4, 5]", "range(0, 99999999999)"))
        .ends_with("range(0, 99999999999) is too long for a concat list"));
        assert!(err(&V2.replace(", 5]", ", 99999999999999999999999]"))
            .ends_with("integer 99999999999999999999999 is too large"));
        assert!(
            err(&V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=2"))
                .ends_with("expected a list such as [2, 3, 4, 5] or range(2, 6), found '2'")
        );
        assert!(err("Genotype([], [], [], [], [])")
            .ends_with("column 26: too many fields; a Genotype has 4"));
        assert!(err("Genotype(normal=[], [])")
            .ends_with("expected a field such as 'reduce=', found '['"));
    }
}
