//! SQL statements, queries (round trips) and write transactions a service ran, from its metrics
//! (`fiscalbill_db_statements_total`, `fiscalbill_db_queries_total`,
//! `fiscalbill_db_write_transactions_total`).

use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, Default)]
pub struct DbCounts {
    pub statements: u64,
    pub queries: u64,
    pub transactions: u64,
}

impl std::ops::Add for DbCounts {
    type Output = DbCounts;

    fn add(self, other: DbCounts) -> DbCounts {
        DbCounts {
            statements: self.statements + other.statements,
            queries: self.queries + other.queries,
            transactions: self.transactions + other.transactions,
        }
    }
}

impl std::ops::Sub for DbCounts {
    type Output = DbCounts;

    fn sub(self, earlier: DbCounts) -> DbCounts {
        DbCounts {
            statements: self.statements.saturating_sub(earlier.statements),
            queries: self.queries.saturating_sub(earlier.queries),
            transactions: self.transactions.saturating_sub(earlier.transactions),
        }
    }
}

/// The service's counts so far.
pub async fn fetch(http: &reqwest::Client, admin: SocketAddr) -> Result<DbCounts, String> {
    let text = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("metrics of {admin}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("metrics of {admin}: {e}"))?;
    Ok(parse(&text))
}

fn parse(text: &str) -> DbCounts {
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).map_or(0, |v| v as u64);
    let mut counts = DbCounts::default();
    for line in text.lines() {
        if line.starts_with("fiscalbill_db_statements_total{") {
            counts.statements += value(line);
        } else if line.starts_with("fiscalbill_db_queries_total ") {
            counts.queries += value(line);
        } else if line.starts_with("fiscalbill_db_write_transactions_total ") {
            counts.transactions += value(line);
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_of_every_kind_are_summed() {
        let text = "# HELP x\nfiscalbill_db_statements_total{kind=\"select\"} 10\n\
                    fiscalbill_db_statements_total{kind=\"insert\"} 5\nfiscalbill_db_write_transactions_total 3\n\
                    fiscalbill_db_write_transactions_created 1.7e9\nfiscalbill_db_queries_total 9\n\
                    fiscalbill_db_queries_created 1.7e9\n";
        let counts = parse(text);
        assert_eq!((counts.statements, counts.queries, counts.transactions), (15, 9, 3));
    }
}
