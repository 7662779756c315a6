//! ListImages: the query parameters of sdc-imgapi's `GET /images`, parsed once into a
//! [`ListQuery`], then matched against images in `published_at` order.
//!
//! Differences from the reference, all fixes of its bugs: `limit` applies after sorting, a
//! `uuid` marker starts exactly at that image (ties on `published_at` cannot repeat or skip
//! pages), `billing_tag` and a non-boolean `public` are answered instead of crashing, and the
//! page size defaults to and is capped at 1000, the documented Moray limit that imgadm pages by.

use std::ops::ControlFlow;
use std::sync::Arc;

use serde_json::Value;

use super::{Caller, ChannelScope, ImageError, Service};
use crate::manifest::{parse_timestamp_ms, Image, ImageState};
use crate::params::{json_str, parse_lower_uuid, Params};
use crate::store::{Narrow, ScanFrom};

/// Page size when the client gives no `limit`, and the largest it may ask for.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum StateFilter {
    Active,
    Disabled,
    Unactivated,
    All,
    Exactly(ImageState),
    /// Anonymous callers asking for hidden states get nothing.
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TextFilter {
    Exact(String),
    Contains(String),
}

impl TextFilter {
    fn parse(value: &str) -> Self {
        match value.strip_prefix('~') {
            Some(sub) => TextFilter::Contains(sub.to_string()),
            None => TextFilter::Exact(value.to_string()),
        }
    }

    fn matches(&self, field: Option<&str>) -> bool {
        match (self, field) {
            (TextFilter::Exact(want), Some(have)) => want == have,
            (TextFilter::Contains(sub), Some(have)) => have.contains(sub.as_str()),
            (_, None) => false,
        }
    }
}

/// Where the listing starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Image(i64, uuid::Uuid),
    Time(i64),
}

/// A parsed ListImages request.
#[derive(Debug, Clone)]
pub struct ListQuery {
    state: StateFilter,
    public: Option<bool>,
    owner: Option<String>,
    name: Option<TextFilter>,
    version: Option<TextFilter>,
    os: Option<String>,
    image_type: Option<(bool, String)>,
    tags: Vec<(String, String)>,
    billing_tags: Vec<String>,
    channel: ChannelScope,
    marker: Marker,
    descending: bool,
    limit: usize,
    /// `inclAdminFields=true`.
    pub admin_fields: bool,
}

impl ListQuery {
    /// Parses and checks every filter, with the reference server's error codes and messages.
    pub fn parse(service: &Service, caller: &Caller, params: &Params) -> Result<Self, ImageError> {
        let authed = caller.is_authenticated();
        let state = match params.get("state") {
            None | Some("active") => StateFilter::Active,
            Some("all") if authed => StateFilter::All,
            Some("all") => StateFilter::Active,
            Some(_) if !authed => {
                // Validate first so that garbage is still an error for anonymous callers.
                let s = params.get("state").unwrap_or_default();
                if ImageState::parse(s).is_none() {
                    return Err(invalid_state(s));
                }
                StateFilter::Nothing
            }
            Some("disabled") => StateFilter::Disabled,
            Some("unactivated") => StateFilter::Unactivated,
            Some(other) => match ImageState::parse(other) {
                Some(s @ (ImageState::Creating | ImageState::Failed)) => StateFilter::Exactly(s),
                _ => return Err(invalid_state(other)),
            },
        };
        let admin_fields = params.bool("inclAdminFields")?.unwrap_or(false);
        if admin_fields && !authed {
            return Err(ImageError::Unauthorized(
                "Unauthorized (auth required to use \"inclAdminFields\" parameter)".into(),
            ));
        }
        let owner = match params.get("owner") {
            None => None,
            Some(owner) => Some(
                parse_lower_uuid(owner)
                    .ok_or_else(|| {
                        ImageError::invalid_param(
                            format!("invalid \"owner\": not a UUID: {}", json_str(owner)),
                            "owner",
                            "Invalid",
                        )
                    })?
                    .to_string(),
            ),
        };
        let image_type = params.get("type").map(|t| match t.strip_prefix('!') {
            Some(excluded) => (false, excluded.to_string()),
            None => (true, t.to_string()),
        });
        let limit = match params.get("limit") {
            None => MAX_LIMIT,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(n) if n > 0 => (n as usize).min(MAX_LIMIT),
                _ => {
                    return Err(ImageError::invalid_param(
                        format!("invalid limit: {}", json_str(raw)),
                        "limit",
                        "Invalid",
                    ))
                }
            },
        };
        let descending = match params.get("sort") {
            None => false,
            Some(sort) => {
                let (field, order) = sort.split_once('.').unwrap_or((sort, "asc"));
                if field != "published_at" {
                    return Err(ImageError::invalid_param(
                        format!("invalid 'sort': not a valid sorting attribute: '{field}'"),
                        "sort",
                        "Invalid",
                    ));
                }
                // As the reference: only "asc"/"ASC" ascends, any other order descends.
                !(order == "asc" || order == "ASC")
            }
        };
        let marker = match params.get("marker") {
            None => Marker::None,
            Some(raw) => match parse_lower_uuid(raw) {
                Some(uuid) => {
                    // An image the caller may not see is no marker: its `published_at` would leak.
                    let image = service.find(&uuid, caller, true)?;
                    Marker::Image(image.published_ms(), uuid)
                }
                None => Marker::Time(parse_timestamp_ms(raw).ok_or_else(|| {
                    ImageError::invalid_param(
                        format!(
                            "invalid value for \"marker\" param: {} is not a UUID or date string",
                            json_str(raw)
                        ),
                        "marker",
                        "Invalid",
                    )
                })?),
            },
        };
        Ok(ListQuery {
            state,
            public: params.bool("public")?,
            owner,
            name: params.get("name").map(TextFilter::parse),
            version: params.get("version").map(TextFilter::parse),
            os: params.get("os").map(str::to_owned),
            image_type,
            tags: params.with_prefix("tag.").map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            billing_tags: params.all("billing_tag").map(str::to_owned).collect(),
            channel: service.channel_scope(caller, true)?,
            marker,
            descending,
            limit,
            admin_fields,
        })
    }

    /// Whether `image` passes every filter (visibility is checked separately).
    pub fn matches(&self, image: &Image) -> bool {
        let state_ok = match &self.state {
            StateFilter::Active => image.activated && !image.disabled(),
            StateFilter::Disabled => image.activated && image.disabled(),
            StateFilter::Unactivated => !image.activated,
            StateFilter::All => true,
            StateFilter::Exactly(state) => image.state() == *state,
            StateFilter::Nothing => false,
        };
        state_ok
            && self.public.is_none_or(|p| image.public() == p)
            && self.owner.as_deref().is_none_or(|o| image.owner() == o)
            && self.name.as_ref().is_none_or(|f| f.matches(image.str_field("name")))
            && self.version.as_ref().is_none_or(|f| f.matches(image.str_field("version")))
            && self.os.as_deref().is_none_or(|os| image.str_field("os") == Some(os))
            && self
                .image_type
                .as_ref()
                .is_none_or(|(include, t)| (image.str_field("type") == Some(t)) == *include)
            && self.tags.iter().all(|(k, v)| tag_matches(image, k, v))
            && self.billing_tags.iter().all(|t| has_billing_tag(image, t))
            && match &self.channel {
                ChannelScope::Any => true,
                ChannelScope::One(c) => image.in_channel(c),
            }
    }
}

fn invalid_state(state: &str) -> ImageError {
    ImageError::invalid_param(format!("invalid state: {}", json_str(state)), "state", "Invalid")
}

/// The reference indexes tags as `KEY=VALUE` search strings: short strings, numbers and
/// booleans keep their value; anything else is indexed as `KEY=` (so only `tag.KEY=` finds it).
fn tag_matches(image: &Image, key: &str, want: &str) -> bool {
    let Some(value) = image.fields.get("tags").and_then(|t| t.get(key)) else { return false };
    let indexed = match value {
        Value::String(s) if s.chars().count() <= 100 => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    };
    indexed == want
}

fn has_billing_tag(image: &Image, tag: &str) -> bool {
    image
        .fields
        .get("billing_tags")
        .and_then(Value::as_array)
        .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(tag)))
}

impl Service {
    /// ListImages: the page of images matching `query` that `caller` may see.
    pub fn list(&self, query: &ListQuery, caller: &Caller) -> Vec<Arc<Image>> {
        let from = match query.marker {
            Marker::None => ScanFrom::Start,
            Marker::Time(ms) => ScanFrom::PublishedMs(ms),
            Marker::Image(ms, _) => ScanFrom::PublishedMs(ms),
        };
        let narrow = Narrow {
            name: match &query.name {
                Some(TextFilter::Exact(name)) => Some(name),
                _ => None,
            },
            owner: query.owner.as_deref(),
        };
        let mut page = Vec::new();
        self.store.scan(from, query.descending, narrow, |image| {
            if let Marker::Image(ms, uuid) = query.marker {
                // Images published in the same millisecond as the marker, on the far side of
                // it in uuid order, belong to the previous page.
                let before = if query.descending { image.uuid > uuid } else { image.uuid < uuid };
                if image.published_ms() == ms && before {
                    return ControlFlow::Continue(());
                }
            }
            if query.matches(image) && self.visible(image, caller) {
                page.push(image.clone());
                if page.len() >= query.limit {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        page
    }
}
