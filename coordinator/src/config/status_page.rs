//! `[[status_page]]`: a public status page (README: "Status page"): its slug, title, optional
//! description and logo, the label selector choosing its targets and their public names,
//! checked while loading so a bad page fails with the file, line and reason.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Longest slug: it is a path segment (`/s/{slug}`), meant to be typed.
pub const MAX_SLUG: usize = 64;
/// Longest title, description and public name, in characters.
pub const MAX_TITLE: usize = 200;
pub const MAX_DESCRIPTION: usize = 2000;
pub const MAX_PUBLIC_NAME: usize = 100;
/// Status pages one config may hold.
pub const MAX_PAGES: usize = 100;
/// The target label that gives a target its public name on every page that shows it (a page's
/// own `names` come first).
pub const PUBLIC_NAME_LABEL: &str = "public_name";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    slug: String,
    title: String,
    #[serde(default)]
    description: String,
    logo: Option<String>,
    /// The selector: a target is on the page when it carries every one of these labels.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Public names by target URL.
    #[serde(default)]
    names: BTreeMap<String, String>,
}

/// A checked `[[status_page]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPage {
    pub slug: String,
    pub title: String,
    pub description: String,
    pub logo: Option<Logo>,
    pub labels: BTreeMap<String, String>,
    /// Public names by normalized target URL.
    pub names: BTreeMap<String, String>,
}

/// A logo: an `https` URL shown as `<img>`, and the one image source the page's policy allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Logo {
    pub url: String,
    /// `https://host[:port]/path`: a CSP source that matches this image only (no query: CSP
    /// sources have none).
    pub csp_source: String,
}

/// Text shown to the public: not empty (unless `optional`), at most `max` characters, no control
/// characters.
fn check_text(field: &str, text: &str, max: usize, optional: bool) -> Result<(), String> {
    if text.trim().is_empty() && !optional {
        return Err(format!("{field}: must not be empty"));
    }
    if text.chars().count() > max {
        return Err(format!("{field}: at most {max} characters"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(format!("{field}: must not hold control characters"));
    }
    Ok(())
}

/// An `https` logo URL that can be named in a Content-Security-Policy as it is.
fn check_logo(text: &str) -> Result<Logo, String> {
    let bad = |why: &str| Err(format!("logo: {text:?} {why}"));
    if text.len() > vantage_shared::limits::MAX_URL {
        return bad(&format!("is longer than {} bytes", vantage_shared::limits::MAX_URL));
    }
    let Ok(url) = url::Url::parse(text) else { return bad("is not a URL") };
    if url.scheme() != "https" {
        return bad("must be an https URL (the page is shown to the public; a data: or http: image is refused)");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("must not carry credentials");
    }
    let Some(host) = url.host_str() else { return bad("has no host") };
    // A CSP source ends at whitespace, ';' and ','; quotes have no place in it either.
    let path = url.path();
    if path.chars().any(|c| matches!(c, ';' | ',' | '\'' | '"') || c.is_whitespace()) {
        return bad("holds ';', ',' or a quote in its path: percent-encode them");
    }
    let port = url.port().map_or(String::new(), |p| format!(":{p}"));
    Ok(Logo { url: url.to_string(), csp_source: format!("https://{host}{port}{path}") })
}

fn check_slug(slug: &str) -> Result<(), String> {
    if slug.is_empty() || slug.len() > MAX_SLUG {
        return Err(format!("slug: {slug:?} must be 1 to {MAX_SLUG} characters"));
    }
    if !slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(format!("slug: {slug:?} may hold only a-z, 0-9 and '-' (it is the page's path, /s/{{slug}})"));
    }
    Ok(())
}

impl Entry {
    /// The page, checked; errors start with `status_page {slug}:` when the slug is known.
    pub fn check(self) -> Result<StatusPage, String> {
        check_slug(&self.slug).map_err(|e| format!("status_page: {e}"))?;
        let error = |m: String| format!("status_page {}: {m}", self.slug);
        check_text("title", &self.title, MAX_TITLE, false).map_err(error)?;
        check_text("description", &self.description, MAX_DESCRIPTION, true).map_err(error)?;
        let logo = self.logo.as_deref().map(check_logo).transpose().map_err(error)?;
        if self.labels.is_empty() {
            return Err(error(
                "labels: give the labels that choose its targets (a page of every target is not accepted)".into(),
            ));
        }
        crate::spec::check_labels(self.labels.iter()).map_err(|e| error(e.to_string()))?;
        let mut names = BTreeMap::new();
        for (url, name) in &self.names {
            let normalized =
                vantage_shared::TargetUrl::parse(url).map_err(|e| error(format!("names: {url:?}: {e}")))?.to_string();
            check_text(&format!("names: {url:?}"), name, MAX_PUBLIC_NAME, false).map_err(error)?;
            names.insert(normalized, name.trim().to_owned());
        }
        Ok(StatusPage {
            slug: self.slug,
            title: self.title.trim().to_owned(),
            description: self.description.trim().to_owned(),
            logo,
            labels: self.labels,
            names,
        })
    }
}

/// The public name a label gives, when it is one a page may show.
pub fn label_name(labels: &std::collections::HashMap<String, String>) -> Option<&str> {
    labels.get(PUBLIC_NAME_LABEL).map(|n| n.trim()).filter(|n| check_text("", n, MAX_PUBLIC_NAME, false).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn load(text: &str) -> Result<Vec<StatusPage>, String> {
        parse_config(text, "v.toml", std::path::Path::new(".")).map(|c| c.status_pages).map_err(|e| e.to_string())
    }

    #[test]
    fn a_page_loads_with_its_names_normalized_and_its_logo_allowed_by_itself() {
        let pages = load(
            "[[status_page]]\nslug = \"shop-2\"\ntitle = \" Example Shop \"\ndescription = \"Our shop.\"\n\
             logo = \"https://cdn.example.com/img/logo.png?v=3\"\nlabels = { public = \"shop\" }\n\
             names = { \"HTTPS://Shop.Example.com\" = \"Shop\" }\n",
        )
        .unwrap();
        let page = &pages[0];
        assert_eq!((page.slug.as_str(), page.title.as_str()), ("shop-2", "Example Shop"));
        assert_eq!(page.names.get("https://shop.example.com/").map(String::as_str), Some("Shop"));
        let logo = page.logo.as_ref().unwrap();
        assert_eq!(logo.url, "https://cdn.example.com/img/logo.png?v=3");
        assert_eq!(logo.csp_source, "https://cdn.example.com/img/logo.png", "exactly that image, no query");
        assert!(load("").unwrap().is_empty());
    }

    #[test]
    fn bad_and_duplicate_slugs_and_unsafe_logos_are_refused_with_the_line() {
        let page = |slug: &str, extra: &str| {
            format!("[[status_page]]\nslug = \"{slug}\"\ntitle = \"T\"\nlabels = {{ public = \"yes\" }}\n{extra}\n")
        };
        for (text, expected) in [
            (page("Shop", ""), "v.toml:1: status_page: slug: \"Shop\" may hold only a-z, 0-9 and '-'"),
            (page("shop/x", ""), "v.toml:1: status_page: slug: \"shop/x\" may hold only a-z, 0-9 and '-'"),
            (page("", ""), "v.toml:1: status_page: slug: \"\" must be 1 to 64 characters"),
            (page(&"a".repeat(65), ""), "must be 1 to 64 characters"),
            (page("shop", "") + "\n" + &page("shop", ""), "v.toml:7: status_page shop: the slug is used twice"),
            (page("shop", "logo = \"http://cdn.example.com/l.png\""), "v.toml:1: status_page shop: logo:"),
            (page("shop", "logo = \"data:image/png;base64,AAAA\""), "must be an https URL"),
            (page("shop", "logo = \"https://cdn.example.com/a;b.png\""), "holds ';'"),
            (page("shop", "logo = \"https://u:p@cdn.example.com/l.png\""), "must not carry credentials"),
            (page("shop", "names = { \"ftp://x/\" = \"X\" }"), "status_page shop: names: \"ftp://x/\""),
            (page("shop", "names = { \"https://x.example/\" = \"\" }"), "must not be empty"),
            (
                "[[status_page]]\nslug = \"shop\"\ntitle = \"T\"\n".to_owned(),
                "v.toml:1: status_page shop: labels: give the labels",
            ),
            ("[[status_page]]\nslug = \"shop\"\ntitle = \"\"\nlabels = { a = \"b\" }\n".to_owned(), "title: must not"),
            (page("shop", "colour = \"red\""), "unknown field `colour`"),
        ] {
            let e = load(&text).unwrap_err();
            assert!(e.contains(expected), "{text}\n→ {e}");
        }
    }

    #[test]
    fn the_readme_example_loads() {
        let readme = include_str!("../../../README.md");
        let block = readme
            .split("```toml\n")
            .filter_map(|b| b.split("```").next())
            .find(|b| b.starts_with("[[status_page]]"))
            .expect("the README's [[status_page]] example");
        let pages = load(block).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pages[0].slug, "shop");
        assert_eq!(
            pages[0].logo.as_ref().map(|l| l.csp_source.as_str()),
            Some("https://cdn.example.com/shop-logo.png")
        );
    }

    #[test]
    fn a_public_name_label_names_a_target_unless_it_is_unfit() {
        let labels = |v: &str| std::collections::HashMap::from([(PUBLIC_NAME_LABEL.to_owned(), v.to_owned())]);
        assert_eq!(label_name(&labels(" Shop ")), Some("Shop"));
        assert_eq!(label_name(&labels("  ")), None);
        assert_eq!(label_name(&Default::default()), None);
    }
}
