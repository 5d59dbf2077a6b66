//! `vantage-coordinator shard`: which of a config's targets a shard of a split owns, or which
//! shard owns one URL, by the same hash the coordinators use (`crate::shard`), to check a split
//! before deploying it. Reads the config and its target files; talks to no coordinator.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::shard::Shard;

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["index", "which"]))]
pub struct ShardArgs {
    /// How many shards the targets are split across (`[shard] count`).
    #[arg(long, value_name = "N")]
    pub of: u32,
    /// List the targets of this shard (0-based, `[shard] index`), one URL a line.
    #[arg(long, value_name = "I", requires = "config")]
    pub index: Option<u32>,
    /// Print the index of the shard that owns this URL instead.
    #[arg(long, value_name = "URL")]
    pub which: Option<String>,
    /// The config file whose targets (and target files' targets) are split; its own `[shard]`
    /// is not used.
    #[arg(long, env = "VANTAGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub fn run(args: ShardArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.which {
        let shard = Shard::new(args.of, 0).context("--of")?;
        let url = vantage_shared::TargetUrl::parse(url).with_context(|| format!("--which {url:?}"))?.to_string();
        println!("{}", shard.owner_of(&url).index());
        return Ok(());
    }
    let index = args.index.unwrap_or_default();
    let shard = Shard::new(args.of, index).with_context(|| format!("--of {} --index {index}", args.of))?;
    let path = args.config.context("--config: name the config file whose targets are split")?;
    let initial = crate::reload::Initial::load(&path)?;
    let mut urls: Vec<String> = initial.targets().into_iter().map(|t| t.url).collect();
    let all = urls.len();
    urls.retain(|url| shard.owns(url));
    urls.sort();
    let mut out = String::new();
    for url in &urls {
        out += url;
        out.push('\n');
    }
    print!("{out}");
    eprintln!("{shard}: {} of the {all} targets of {}", urls.len(), path.display());
    Ok(())
}
