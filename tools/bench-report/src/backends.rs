//! The two backends side by side: the rows `src/bin/backends.rs` prints
//! (`backend,op,n,threads,pass,median_s`, one build per backend, several rounds each),
//! and the per-operation table made of them, in `docs/backends.md` and in the report.

use crate::Res;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One timing: a backend, an operation at one order and thread count, one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub backend: String,
    pub op: String,
    pub n: usize,
    pub threads: usize,
    pub pass: String,
    pub secs: f64,
}

impl Row {
    /// The CSV line, without a newline.
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{:.9}",
            self.backend, self.op, self.n, self.threads, self.pass, self.secs
        )
    }
}

/// The rows of a CSV file of [`Row::csv`] lines (a header line is skipped), or `None`
/// when there is no such file.
pub fn read(path: &Path) -> Res<Option<Vec<Row>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() != 6 || f[0] == "backend" {
            continue;
        }
        let bad = |what: &str| format!("{}:{}: bad {what}: {line}", path.display(), i + 1);
        rows.push(Row {
            backend: f[0].to_string(),
            op: f[1].to_string(),
            n: f[2].parse().map_err(|_| bad("n"))?,
            threads: f[3].parse().map_err(|_| bad("thread count"))?,
            pass: f[4].to_string(),
            secs: f[5].parse().map_err(|_| bad("time"))?,
        });
    }
    Ok(Some(rows))
}

/// `1.23 ms` or `456 µs`.
fn fmt_secs(s: f64) -> String {
    if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

type Key = (usize, String, usize, String);

/// Per operation, order, thread count and pass: each backend's fastest round (the
/// median of a round's runs; the fastest round is the one least disturbed by other
/// processes).
pub fn best(rows: &[Row]) -> BTreeMap<Key, BTreeMap<String, f64>> {
    let mut t: BTreeMap<Key, BTreeMap<String, f64>> = BTreeMap::new();
    for r in rows {
        let e = t
            .entry((r.threads, r.op.clone(), r.n, r.pass.clone()))
            .or_default()
            .entry(r.backend.clone())
            .or_insert(f64::INFINITY);
        *e = e.min(r.secs);
    }
    t
}

/// The markdown table: one line per operation, order, thread count and pass, with both
/// backends' times, their ratio, and the faster one.
pub fn table(rows: &[Row]) -> Res<String> {
    let mut o = String::new();
    writeln!(
        o,
        "| threads | operation | n | pass | OpenBLAS | faer | faer / OpenBLAS | faster |"
    )?;
    writeln!(o, "|---:|---|---:|---|---:|---:|---:|---|")?;
    for ((threads, op, n, pass), by) in best(rows) {
        let (Some(&ob), Some(&fa)) = (by.get("OpenBLAS"), by.get("faer")) else {
            continue;
        };
        let r = fa / ob;
        let faster = if r < 0.95 {
            "faer"
        } else if r > 1.05 {
            "OpenBLAS"
        } else {
            "tie (±5%)"
        };
        writeln!(
            o,
            "| {threads} | {op} | {n} | {pass} | {} | {} | {r:.2} | {faster} |",
            fmt_secs(ob),
            fmt_secs(fa)
        )?;
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(backend: &str, secs: f64) -> Row {
        Row {
            backend: backend.into(),
            op: "MatMul".into(),
            n: 1024,
            threads: 1,
            pass: "forward".into(),
            secs,
        }
    }

    #[test]
    fn the_fastest_round_of_each_backend_makes_the_line() {
        let rows = [
            row("OpenBLAS", 0.040),
            row("faer", 0.020),
            row("OpenBLAS", 0.030),
            row("faer", 0.025),
        ];
        let t = table(&rows).unwrap();
        assert!(
            t.contains("| 1 | MatMul | 1024 | forward | 30.00 ms | 20.00 ms | 0.67 | faer |"),
            "{t}"
        );
        let back: Vec<Row> = rows
            .iter()
            .map(|r| r.csv())
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                row(f[0], f[5].parse().unwrap())
            })
            .collect();
        assert_eq!(back, rows);
    }
}
