//! Markdown tables: one row per number, one column per proxy, and the
//! DESIGN budget beside them. A cell that could not be measured says
//! `n/a (reason)`.

/// One cell: a number as text, or why there is none.
pub(crate) type Cell = Result<String, String>;

/// A table being built.
pub(crate) struct Table {
    title: String,
    columns: Vec<String>,
    rows: Vec<(String, Vec<Cell>, String)>,
    notes: Vec<String>,
}

impl Table {
    pub(crate) fn new(title: impl Into<String>, columns: &[&str]) -> Self {
        Table {
            title: title.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row: its label, one cell per column, and the budget.
    pub(crate) fn row(&mut self, label: &str, cells: Vec<Cell>, budget: &str) {
        self.rows.push((label.to_owned(), cells, budget.to_owned()));
    }

    /// Adds a line printed under the table.
    pub(crate) fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// The table as Markdown.
    pub(crate) fn render(&self) -> String {
        let mut out = format!("### {}\n\n| measure |", self.title);
        for c in &self.columns {
            out.push_str(&format!(" {c} |"));
        }
        out.push_str(" budget (DESIGN) |\n|---|");
        for _ in &self.columns {
            out.push_str("---:|");
        }
        out.push_str("---|\n");
        for (label, cells, budget) in &self.rows {
            out.push_str(&format!("| {label} |"));
            for cell in cells {
                match cell {
                    Ok(text) => out.push_str(&format!(" {text} |")),
                    Err(reason) => out.push_str(&format!(" n/a ({reason}) |")),
                }
            }
            out.push_str(&format!(" {budget} |\n"));
        }
        for note in &self.notes {
            out.push_str(&format!("\n{note}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cells_and_reasons() {
        let mut t = Table::new("T", &["a", "b"]);
        t.row("x", vec![Ok("1".into()), Err("why".into())], "≤ 2");
        let text = t.render();
        assert!(text.contains("| measure | a | b | budget (DESIGN) |"));
        assert!(text.contains("| x | 1 | n/a (why) | ≤ 2 |"));
    }
}
