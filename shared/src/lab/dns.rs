//! A real DNS server on loopback UDP for the DNS scenarios: authoritative for `vantage.test`,
//! with names that answer, names that do not exist, names without addresses and names whose
//! server fails. Plus a "server" that never answers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// What the lab's DNS server says about one name.
#[derive(Debug, Clone)]
pub enum Answer {
    Addresses(Vec<IpAddr>),
    /// The name exists (it has a TXT record) but has no A or AAAA.
    NoAddresses,
    Rcode(ResponseCode),
}

pub const ZONE: &str = "vantage.test.";

/// Serves `names` (fully qualified, lower case); every other name in the zone is NXDOMAIN.
pub async fn serve(socket: UdpSocket, names: Arc<HashMap<String, Answer>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else { continue };
        let Ok(query) = Message::from_vec(&buf[..len]) else { continue };
        if let Some(response) = answer(&query, &names) {
            if let Ok(bytes) = response.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    }
}

/// Reads every query and answers none.
pub async fn serve_silence(socket: UdpSocket) {
    let mut buf = vec![0u8; 4096];
    while socket.recv_from(&mut buf).await.is_ok() {}
}

fn answer(query: &Message, names: &HashMap<String, Answer>) -> Option<Message> {
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let question = query.queries.first()?.clone();
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.add_query(question.clone());
    let name = question.name().to_lowercase();
    let zone = Name::from_ascii(ZONE).ok()?;
    match names.get(&name.to_ascii()) {
        Some(Answer::Addresses(ips)) => {
            for ip in ips {
                let rdata = match (ip, question.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                    _ => continue,
                };
                response.add_answer(Record::from_rdata(name.clone(), 60, rdata));
            }
            if response.answers.is_empty() {
                response.add_authority(soa(&zone));
            }
        }
        Some(Answer::NoAddresses) => {
            if question.query_type() == RecordType::TXT {
                let txt = RData::TXT(TXT::new(vec!["no addresses here".into()]));
                response.add_answer(Record::from_rdata(name.clone(), 60, txt));
            } else {
                response.add_authority(soa(&zone));
            }
        }
        Some(Answer::Rcode(code)) => response.metadata.response_code = *code,
        None => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa(&zone));
        }
    }
    Some(response)
}

fn soa(zone: &Name) -> Record {
    let ns = Name::from_ascii("ns.vantage.test.").expect("literal name");
    let admin = Name::from_ascii("hostmaster.vantage.test.").expect("literal name");
    Record::from_rdata(zone.clone(), 60, RData::SOA(SOA::new(ns, admin, 1, 3600, 600, 86_400, 60)))
}
