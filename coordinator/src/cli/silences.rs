//! `vantage-coordinator silences`: hold back notifications for a while, list and end silences.

use clap::{Args, Subcommand};
use vantage_proto::v1::{CreateSilenceRequest, DeleteSilenceRequest, ListSilencesRequest, Silence};

use super::{ClientArgs, client, duration, label, status_error};
use crate::view::describe_silence;

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Hold back the notifications of a target (or of every target with some labels) for a while.
    Add(AddSilence),
    /// List silences.
    Ls,
    /// End a silence now.
    Rm { id: String },
}

#[derive(Debug, Args)]
pub struct SilencesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: SilenceCommand,
}

#[derive(Debug, Args)]
pub struct AddSilence {
    /// A target URL (or a region's or heartbeat's name).
    #[arg(long)]
    pub target: Option<String>,
    /// Silence every target with this label, KEY=VALUE (repeatable; all must match).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    pub labels: Vec<(String, String)>,
    /// How long, from now.
    #[arg(long = "for", value_parser = duration, value_name = "DURATION")]
    pub duration: std::time::Duration,
    #[arg(long, default_value = "")]
    pub comment: String,
}

pub async fn run_silences(args: SilencesArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    match args.command {
        SilenceCommand::Add(a) => {
            let end = crate::clock::now_ms() + a.duration.as_millis() as i64;
            let silence = Silence {
                target: a.target.unwrap_or_default(),
                labels: a.labels.into_iter().collect(),
                end: Some(crate::clock::timestamp(end)),
                comment: a.comment,
                ..Default::default()
            };
            let r =
                client.create_silence(CreateSilenceRequest { silence: Some(silence) }).await.map_err(status_error)?;
            let s = r.into_inner().silence.unwrap_or_default();
            println!("silence {}", describe_silence(&s));
        }
        SilenceCommand::Ls => {
            for s in client.list_silences(ListSilencesRequest {}).await.map_err(status_error)?.into_inner().silences {
                let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let what =
                    [s.target.clone(), labels.join(",")].into_iter().filter(|x| !x.is_empty()).collect::<Vec<_>>();
                println!("{}  {}  from {}", describe_silence(&s), what.join(" "), s.source);
            }
        }
        SilenceCommand::Rm { id } => {
            let r = client.delete_silence(DeleteSilenceRequest { id: id.clone() }).await.map_err(status_error)?;
            if !r.into_inner().deleted {
                anyhow::bail!("no silence {id}");
            }
            println!("silence {id} ended");
        }
    }
    Ok(())
}
