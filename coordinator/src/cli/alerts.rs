//! `vantage-coordinator alerts`: the newest alerts and how each delivery went.

use clap::Args;
use vantage_proto::v1::ListAlertsRequest;

use super::{ClientArgs, client, status_error};
use crate::clock::timestamp_json as ts;

#[derive(Debug, Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only the alerts about this target URL, region or heartbeat.
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

/// `alerts`: the newest alerts and how each delivery went.
pub async fn run_alerts(args: AlertsArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    let request = ListAlertsRequest { subject: args.subject.unwrap_or_default(), limit: args.limit };
    let alerts = client.list_alerts(request).await.map_err(status_error)?.into_inner().alerts;
    for a in alerts {
        let at = ts(a.at.as_ref());
        println!("{}  {}  {}", at.as_str().unwrap_or("?"), a.id, a.summary);
        if !a.silenced_by.is_empty() {
            println!("    held back by silence {}", a.silenced_by);
        }
        for d in &a.deliveries {
            let error = if d.last_error.is_empty() { String::new() } else { format!(": {}", d.last_error) };
            println!("    {:<16} {} after {} attempt(s){error}", d.channel, d.state, d.attempts);
        }
    }
    Ok(())
}
