//! The skeleton of every subcommand that acts on the cluster, written once: the
//! runtime, the cancellation tree (the first Ctrl-C stops cleanly, the second
//! forces), the coordination store the inventory names, the command's own work, its
//! document printed as JSON or as text, and the exit status the document maps to.

use tokio_util::sync::CancellationToken;

use crate::config::inventory::Inventory;
use crate::coordination::store::{Store, open_store};
use crate::error::Exit;

/// What a command leaves for the operator: one document.
pub trait Outcome: serde::Serialize {
    /// The document as text for an operator.
    fn render(&self) -> String;
    /// The document as JSON (docs/json.md): its fields, unless it adds some.
    fn document(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
    /// The exit status it maps to; `cancelled` when Ctrl-C stopped the work.
    fn exit(&self, cancelled: bool) -> Exit;
}

/// How the document is printed: `--json`, `--quiet`, or text.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

/// The version of every `--json` document's shape (docs/json.md), in its `schema`
/// field: raised when a field changes meaning or goes away, not when one is added.
pub const JSON_SCHEMA: u32 = 1;

/// `doc` as the JSON document a command prints: its fields and `schema`.
pub fn json<T: serde::Serialize>(doc: &T) -> anyhow::Result<String> {
    with_schema(serde_json::to_value(doc)?)
}

/// A JSON document with its `schema`, as text.
pub fn with_schema(mut v: serde_json::Value) -> anyhow::Result<String> {
    if let serde_json::Value::Object(fields) = &mut v {
        fields.insert("schema".into(), JSON_SCHEMA.into());
    }
    Ok(serde_json::to_string_pretty(&v)?)
}

impl Output {
    pub fn print<T: Outcome>(&self, doc: &T) -> anyhow::Result<()> {
        if self.json {
            println!("{}", with_schema(doc.document()?)?);
        } else if !self.quiet {
            print!("{}", doc.render());
        }
        Ok(())
    }
}

/// Runs `work` with the inventory's store and the cancellation tree, prints what
/// it returns, and maps it to the exit status.
pub fn run<T: Outcome>(
    inv: &Inventory,
    output: Output,
    work: impl AsyncFnOnce(&Store, CancellationToken) -> anyhow::Result<T>,
) -> anyhow::Result<Exit> {
    run_without_store(output, async |cancel| {
        let store = open_store(inv).await?;
        work(&store, cancel).await
    })
}

/// [`run`] for a command that needs no store (`prepare`): a store that is down
/// does not stop it.
pub fn run_without_store<T: Outcome>(
    output: Output,
    work: impl AsyncFnOnce(CancellationToken) -> anyhow::Result<T>,
) -> anyhow::Result<Exit> {
    let rt = crate::shutdown::runtime()?;
    let (doc, cancelled) = rt.block_on(async {
        let cancel = crate::shutdown::install();
        let doc = work(cancel.clone()).await?;
        anyhow::Ok((doc, cancel.is_cancelled()))
    })?;
    output.print(&doc)?;
    Ok(doc.exit(cancelled))
}
