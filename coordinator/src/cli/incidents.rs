//! `vantage-coordinator incidents`: the newest incidents, an incident group's members listed
//! together under the group (its key and shared cause).

use clap::Args;
use vantage_proto::v1::{Incident, ListIncidentsRequest};

use super::{ClientArgs, client, status_error};
use crate::clock::{human_duration, ms, rfc3339};

#[derive(Debug, Args)]
pub struct IncidentsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only this target's incidents.
    #[arg(long)]
    pub url: Option<String>,
    /// Only the open ones.
    #[arg(long)]
    pub open: bool,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

/// `incidents`: the newest incidents, newest first, a group's members under the group.
pub async fn run_incidents(args: IncidentsArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    let request = ListIncidentsRequest { url: args.url.unwrap_or_default(), open_only: args.open, limit: args.limit };
    let incidents = client.list_incidents(request).await.map_err(status_error)?.into_inner().incidents;
    print!("{}", listing(&incidents));
    Ok(())
}

/// One line per incident; a group's members together, under one line for the group, where its
/// newest member comes.
pub fn listing(incidents: &[Incident]) -> String {
    let mut out = String::new();
    let mut shown: Vec<&str> = Vec::new();
    for incident in incidents {
        if incident.group.is_empty() {
            out.push_str(&line(incident, ""));
            continue;
        }
        if shown.contains(&incident.group.as_str()) {
            continue;
        }
        shown.push(&incident.group);
        out.push_str(&format!(
            "GROUP {}: {} targets {}\n",
            incident.group,
            incident.members.len(),
            incident.shared_cause
        ));
        let mut members: Vec<&Incident> = incidents.iter().filter(|i| i.group == incident.group).collect();
        members.sort_by(|a, b| a.url.cmp(&b.url));
        for member in members {
            out.push_str(&line(member, "  "));
        }
    }
    out
}

fn line(i: &Incident, indent: &str) -> String {
    let opened = i.opened.as_ref().map(ms);
    let state = match (opened, i.closed.as_ref().map(ms)) {
        (Some(o), Some(c)) => {
            let why = if i.closed_reason.is_empty() { String::new() } else { format!(" ({})", i.closed_reason) };
            format!("closed after {}{why}", human_duration(c - o))
        }
        _ => "open".to_owned(),
    };
    let cause = i.cause.as_ref().map_or("-", |c| c.code.as_str());
    format!(
        "{indent}{}  DOWN  {}  {cause}  in {}  {state}\n",
        opened.map(rfc3339).unwrap_or_else(|| "?".into()),
        i.url,
        i.regions.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::timestamp;

    #[test]
    fn a_groups_members_are_listed_together_under_the_group() {
        let incident = |url: &str, opened: i64, group: &str| Incident {
            url: url.into(),
            opened: Some(timestamp(opened)),
            regions: vec!["eu-west".into(), "us-east".into()],
            group: group.into(),
            members: if group.is_empty() { vec![] } else { vec!["https://a/".into(), "https://b/".into()] },
            shared_cause: if group.is_empty() { String::new() } else { "behind 203.0.113.7:443".into() },
            ..Default::default()
        };
        let text = listing(&[
            incident("https://b/", 3_000, "vantage/group/g#1000"),
            incident("https://c/", 2_000, ""),
            incident("https://a/", 1_000, "vantage/group/g#1000"),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "GROUP vantage/group/g#1000: 2 targets behind 203.0.113.7:443");
        assert!(
            lines[1].starts_with("  1970-01-01T00:00:01Z  DOWN  https://a/  -  in eu-west, us-east  open"),
            "{text}"
        );
        assert!(lines[2].starts_with("  1970-01-01T00:00:03Z  DOWN  https://b/"), "{text}");
        assert!(lines[3].starts_with("1970-01-01T00:00:02Z  DOWN  https://c/"), "{text}");
    }
}
