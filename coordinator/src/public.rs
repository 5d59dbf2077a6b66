//! Public status pages at run time (README: "Status page"): the `[[status_page]]` tables in
//! force (swapped whole by a reload), which targets each page shows and under which public name,
//! and what is served without credentials: `/s/{slug}` and the badges of the targets on a page.
//! Anyone may ask, so asking costs little: the targets a page selects are read from the hub at
//! most every `SELECTION_TTL`, and a page is drawn at most every `RENDER_TTL`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use vantage_proto::v1::TargetSpec;

use crate::config::status_page::{self, StatusPage};
use crate::hub::Hub;
use crate::page::public::{self as render, PublicIncident, Service};

/// How long a page's selection of targets is reused (a target labelled public, or no longer,
/// shows or leaves within this).
pub const SELECTION_TTL: Duration = Duration::from_secs(5);
/// How long a drawn page is served again (also its `Cache-Control: max-age`).
pub const RENDER_TTL: Duration = Duration::from_secs(5);
/// Where public pages live: `/s/{slug}`.
pub const PREFIX: &str = "/s/";

/// One target on a page: its URL (never shown) and its public name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub url: String,
    pub name: String,
}

/// Which targets each page shows.
#[derive(Debug, Default)]
pub struct Selection {
    /// By slug: named targets by name, then the unnamed ones ("Service 1", …) by URL.
    pub pages: HashMap<String, Vec<Listed>>,
    /// Every URL on some page: their badges need no credentials.
    pub urls: HashSet<String>,
}

/// Whether `labels` carry every label of `selector` (as a route or a silence selects).
fn selects(selector: &BTreeMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The targets of each page and their public names: the page's `names`, else the target's
/// `public_name` label, else a neutral "Service N" (N by URL order among the unnamed), never
/// the URL.
pub fn select(pages: &[StatusPage], targets: &[TargetSpec]) -> Selection {
    let mut selection = Selection::default();
    let mut sorted: Vec<&TargetSpec> = targets.iter().collect();
    sorted.sort_by(|a, b| a.url.cmp(&b.url));
    for page in pages {
        let (mut named, mut unnamed) = (Vec::new(), Vec::new());
        for t in sorted.iter().filter(|t| selects(&page.labels, &t.labels)) {
            let name = page.names.get(&t.url).map(String::as_str).or_else(|| status_page::label_name(&t.labels));
            match name {
                Some(name) => named.push(Listed { url: t.url.clone(), name: name.to_owned() }),
                None => unnamed.push(t.url.clone()),
            }
            selection.urls.insert(t.url.clone());
        }
        named.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.url.cmp(&b.url)));
        named
            .extend(unnamed.into_iter().enumerate().map(|(i, url)| Listed { url, name: format!("Service {}", i + 1) }));
        selection.pages.insert(page.slug.clone(), named);
    }
    selection
}

/// A drawn page: when, for which generation of the pages, its HTML and policy.
type Drawn = (Instant, u64, String, String);

/// The public pages in force and their caches.
pub struct Public {
    pages: RwLock<Arc<Vec<StatusPage>>>,
    selection: Mutex<Option<(Instant, Arc<Selection>)>>,
    /// Counts `set`s: what was drawn for older pages is not served again.
    generation: AtomicU64,
    /// One page is drawn at a time; the others wait and take the fresh one.
    drawn: tokio::sync::Mutex<HashMap<String, Drawn>>,
}

impl Public {
    pub fn new(pages: Vec<StatusPage>) -> Public {
        Public {
            pages: RwLock::new(Arc::new(pages)),
            selection: Mutex::new(None),
            generation: AtomicU64::new(0),
            drawn: Default::default(),
        }
    }

    fn pages(&self) -> Arc<Vec<StatusPage>> {
        self.pages.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts a reloaded config's pages in force: nothing selected or drawn before is served again.
    pub fn set(&self, pages: Vec<StatusPage>) {
        *self.pages.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pages);
        *self.selection.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn count(&self) -> usize {
        self.pages().len()
    }

    /// Which targets the pages show now (read from the hub when older than `SELECTION_TTL`).
    pub fn selection(&self, hub: &Hub) -> Arc<Selection> {
        let pages = self.pages();
        if pages.is_empty() {
            return Arc::default();
        }
        let mut cached = self.selection.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, selection)) = cached.as_ref().filter(|(at, _)| at.elapsed() < SELECTION_TTL) {
            return selection.clone();
        }
        let selection = Arc::new(select(&pages, &hub.targets()));
        *cached = Some((Instant::now(), selection.clone()));
        selection
    }

    /// Whether the badge asked for by `query` (`target=URL`) is of a target on a public page.
    pub fn badge_is_public(&self, hub: &Hub, query: &str) -> bool {
        crate::badge::target_of(query).is_some_and(|url| self.selection(hub).urls.contains(&url))
    }

    /// `/s/{slug}`: the status, the HTML and its Content-Security-Policy.
    pub async fn serve(&self, hub: &Hub, slug: &str) -> (StatusCode, String, String) {
        let generation = self.generation.load(Ordering::SeqCst);
        let Some(page) = self.pages().iter().find(|p| p.slug == slug).cloned() else {
            return (StatusCode::NOT_FOUND, render::not_found(), crate::page::public_csp(None));
        };
        let mut drawn = self.drawn.lock().await;
        if let Some((at, of, html, csp)) = drawn.get(slug) {
            if at.elapsed() < RENDER_TTL && *of == generation {
                return (StatusCode::OK, html.clone(), csp.clone());
            }
        }
        let html = self.draw(hub, &page).await;
        let csp = crate::page::public_csp(page.logo.as_ref().map(|l| l.csp_source.as_str()));
        drawn.retain(|_, (_, of, _, _)| *of == generation);
        drawn.insert(page.slug.clone(), (Instant::now(), generation, html.clone(), csp.clone()));
        (StatusCode::OK, html, csp)
    }

    /// Reads what the page may show of each of its targets, and draws it.
    async fn draw(&self, hub: &Hub, page: &StatusPage) -> String {
        let now = crate::clock::now_ms();
        let selection = self.selection(hub);
        let listed = selection.pages.get(&page.slug).map(Vec::as_slice).unwrap_or_default();
        let more = listed.len().saturating_sub(render::MAX_SERVICES);
        let listed = &listed[..listed.len().min(render::MAX_SERVICES)];
        let urls: Vec<String> = listed.iter().map(|l| l.url.clone()).collect();
        let statuses: HashMap<String, vantage_proto::v1::TargetStatus> =
            hub.with_uptime(hub.statuses(&urls)).await.into_iter().map(|s| (s.url.clone(), s)).collect();
        let since = now - render::INCIDENT_DAYS * crate::uptime::DAY_MS;
        let mut services = Vec::with_capacity(listed.len());
        for l in listed {
            // Removed since it was selected: not shown.
            let Some(status) = statuses.get(&l.url) else { continue };
            let days = hub.daily(&l.url, render::BAR_DAYS).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading a public page's days failed");
                Vec::new()
            });
            let incidents = hub.incidents(&l.url, false, render::MAX_INCIDENTS).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading a public page's incidents failed");
                Vec::new()
            });
            let incidents = incidents
                .iter()
                .filter_map(|i| {
                    let opened = crate::clock::ms(i.opened.as_ref()?);
                    (opened >= since).then(|| PublicIncident {
                        opened_ms: opened,
                        closed_ms: i.closed.as_ref().map(crate::clock::ms),
                        category: render::category(i.cause.as_ref().map_or("", |c| c.code.as_str())),
                    })
                })
                .collect();
            services.push(Service {
                name: l.name.clone(),
                verdict: crate::names::verdict(status.verdict),
                uptime: status.uptime.clone(),
                days,
                incidents,
            });
        }
        render::document(page, &render::fragment(page, &services, more, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, labels: &[(&str, &str)]) -> TargetSpec {
        TargetSpec {
            url: url.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            ..Default::default()
        }
    }

    fn shop(title: &str) -> StatusPage {
        StatusPage {
            slug: "shop".into(),
            title: title.into(),
            description: String::new(),
            logo: None,
            labels: [("public".to_owned(), "shop".to_owned())].into(),
            names: Default::default(),
        }
    }

    #[tokio::test]
    async fn pages_and_public_badges_follow_the_pages_in_force_at_once() {
        let dir = std::env::temp_dir().join(format!("vantage-public-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(crate::store::Store::open(&dir).unwrap());
        let targets = vec![
            target("https://shop.example/", &[("public", "shop")]),
            target("https://internal.example/", &[("team", "ops")]),
        ];
        let hub = Hub::open(store, targets, Default::default()).await.unwrap();
        let public = Public::new(vec![shop("Shop status")]);
        assert!(public.badge_is_public(&hub, "target=https%3A%2F%2FSHOP.example"), "normalized as the badge does");
        assert!(!public.badge_is_public(&hub, "target=https%3A%2F%2Finternal.example%2F"));
        assert!(!public.badge_is_public(&hub, "target=https%3A%2F%2Fnowhere.example%2F"));
        assert!(!public.badge_is_public(&hub, "window=30d"));
        assert!(
            !public
                .badge_is_public(&hub, "target=https%3A%2F%2Finternal.example%2F&target=https%3A%2F%2Fshop.example%2F"),
            "the first target counts, as for the badge itself"
        );
        let (status, html, csp) = public.serve(&hub, "shop").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("<h1>Shop status</h1>") && html.contains("data-service=\"Service 1\""), "{html}");
        assert!(!html.contains("example/") && !csp.contains("script-src"), "{html}");
        assert_eq!(public.serve(&hub, "nope").await.0, StatusCode::NOT_FOUND);
        // A reload: the changed page is drawn again at once, a removed one is gone at once.
        public.set(vec![shop("Renamed")]);
        assert!(public.serve(&hub, "shop").await.1.contains("<h1>Renamed</h1>"));
        public.set(Vec::new());
        assert_eq!(public.serve(&hub, "shop").await.0, StatusCode::NOT_FOUND);
        assert!(!public.badge_is_public(&hub, "target=https%3A%2F%2Fshop.example%2F"), "no page, no public badge");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_page_shows_the_targets_its_labels_select_under_public_names_never_urls() {
        let page = StatusPage {
            slug: "shop".into(),
            title: "Shop".into(),
            description: String::new(),
            logo: None,
            labels: [("public".to_owned(), "shop".to_owned())].into(),
            names: [("https://b.example/".to_owned(), "Checkout".to_owned())].into(),
        };
        let targets = [
            target("https://z.example/", &[("public", "shop")]),
            target("https://b.example/", &[("public", "shop"), ("public_name", "ignored: the page names it")]),
            target("https://a.example/", &[("public", "shop"), ("public_name", "API")]),
            target("https://c.example/", &[("public", "shop"), ("team", "x")]),
            target("https://internal.example/", &[("public", "no")]),
            target("https://bare.example/", &[]),
        ];
        let selection = select(std::slice::from_ref(&page), &targets);
        let listed: Vec<(&str, &str)> =
            selection.pages["shop"].iter().map(|l| (l.name.as_str(), l.url.as_str())).collect();
        assert_eq!(
            listed,
            [
                ("API", "https://a.example/"),
                ("Checkout", "https://b.example/"),
                ("Service 1", "https://c.example/"),
                ("Service 2", "https://z.example/"),
            ]
        );
        assert_eq!(selection.urls.len(), 4);
        assert!(
            !selection.urls.contains("https://internal.example/") && !selection.urls.contains("https://bare.example/")
        );
    }
}
