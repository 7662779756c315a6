//! The image service: IMGAPI's rules (who may see what, which changes are allowed, what each
//! action does) on top of the store. Nothing here knows about HTTP; handlers call these
//! functions and map [`ImageError`] to a status and a `{"code","message"}` body in one place.

pub mod actions;
pub mod create;
pub mod listing;
pub mod remote;
pub mod update;

use std::sync::Arc;

use uuid::Uuid;

use crate::config::{AnonymousReads, Channel};
use crate::manifest::validate::{FieldError, ValidationMode};
use crate::manifest::Image;
use crate::params::{json_str, ParamError, Params};
use crate::store::{Store, StoreError};

/// Everything that can go wrong in an image operation, in IMGAPI's vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image with this uuid, or one the caller may not see (account, channel or read
    /// policy): the two must look alike, or a caller could probe for private images.
    #[error("image {0} not found")]
    NotFound(Uuid),
    #[error("image \"{0}\" has no file")]
    NoFile(Uuid),
    #[error("image \"{0}\" has no icon")]
    NoIcon(Uuid),
    #[error("{message}")]
    InvalidParameter { message: String, errors: Vec<FieldError> },
    #[error("{message}")]
    ValidationFailed { message: String, errors: Vec<FieldError> },
    #[error("image uuid \"{0}\" already exists")]
    UuidExists(Uuid),
    #[error("image \"{0}\" is already activated")]
    AlreadyActivated(Uuid),
    #[error("image \"{0}\" cannot be activated: it has no file")]
    NoActivationNoFile(Uuid),
    #[error("cannot modify files on activated image {0}")]
    FilesImmutable(Uuid),
    #[error("image \"{uuid}\" has {} dependent incremental image(s): {}", dependents.len(), join(dependents))]
    HasDependents { uuid: Uuid, dependents: Vec<Uuid> },
    #[error("origin image \"{0}\" does not exist")]
    OriginDoesNotExist(String),
    #[error("account {account} is not the owner of image {uuid}")]
    NotImageOwner { account: Uuid, uuid: Uuid },
    #[error("this endpoint may only be called by an operator")]
    OperatorOnly,
    /// A received file failed its checks (the reference calls this `Download`, for uploads too).
    #[error("{0}")]
    Download(String),
    /// An upload was refused before or while it was received (`Upload`).
    #[error("{0}")]
    Upload(String),
    /// Authentication is needed for this request (e.g. `inclAdminFields`).
    #[error("{0}")]
    Unauthorized(String),
    /// A feature of Triton's IMGAPI that needs services a standalone server does not have.
    #[error("{0}")]
    NotImplemented(String),
    /// Another IMGAPI server (a `source`, a mirror's upstream) failed or sent garbage.
    #[error("{0}")]
    RemoteSource(String),
    #[error("if-match '{list}' didn't match etag '{etag}'")]
    PreconditionFailed { list: String, etag: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn join(uuids: &[Uuid]) -> String {
    uuids.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
}

impl From<ParamError> for ImageError {
    fn from(e: ParamError) -> Self {
        ImageError::invalid_param(e.message, &e.field, "Invalid")
    }
}

impl ImageError {
    /// `InvalidParameter` with one field error, as sdc-imgapi builds it.
    pub fn invalid_param(message: impl Into<String>, field: &str, code: &str) -> Self {
        ImageError::InvalidParameter {
            message: message.into(),
            errors: vec![FieldError { field: field.into(), code: code.into(), message: None }],
        }
    }

    /// `ValidationFailed` from a validator's error list.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        ImageError::ValidationFailed { message: crate::manifest::validate::summary_message(&errors), errors }
    }
}

/// Who is asking, as far as visibility is concerned.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// `?account=UUID`: narrow the view to what that account may see (CloudAPI-style).
    pub account: Option<Uuid>,
    /// `?channel=`: the channel named by the request (`*` = all), if any.
    pub channel: Option<String>,
    /// `If-Match` of a conditional change.
    pub if_match: Option<String>,
}

impl Caller {
    /// Reads `account` and `channel` from the query.
    pub fn from_params(user: Option<String>, params: &Params) -> Result<Self, ImageError> {
        Ok(Caller {
            user,
            account: params.uuid("account")?,
            channel: params.get("channel").map(str::to_owned),
            if_match: None,
        })
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }
}

/// Server-wide settings the rules depend on.
#[derive(Clone)]
pub struct Service {
    pub store: Arc<Store>,
    pub channels: Vec<Channel>,
    pub anonymous_reads: AnonymousReads,
    pub max_file_size: u64,
    /// Whole-image copies in progress (mirror syncs, pull-through), one at a time per image.
    pub copies: Arc<remote::CopyGates>,
}

/// The channel a request resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelScope {
    /// The server has no channels, or the request asked for `*`.
    Any,
    One(String),
}

impl Service {
    pub fn validation_mode(&self) -> ValidationMode {
        ValidationMode { channels_required: !self.channels.is_empty() }
    }

    /// Resolves `?channel=` (or the default channel) for a request; `allow_all` for `*`.
    pub fn channel_scope(&self, caller: &Caller, allow_all: bool) -> Result<ChannelScope, ImageError> {
        if self.channels.is_empty() {
            return Ok(ChannelScope::Any);
        }
        match caller.channel.as_deref() {
            Some("*") if allow_all => Ok(ChannelScope::Any),
            Some(name) => {
                if self.channels.iter().any(|c| c.name == name) {
                    Ok(ChannelScope::One(name.to_string()))
                } else {
                    Err(ImageError::ValidationFailed {
                        message: format!("unknown channel: {name}"),
                        errors: vec![FieldError {
                            field: "channel".into(),
                            code: "Invalid".into(),
                            message: None,
                        }],
                    })
                }
            }
            None => match self.channels.iter().find(|c| c.default) {
                Some(c) => Ok(ChannelScope::One(c.name.clone())),
                None => Err(ImageError::ValidationFailed {
                    message: "channel not specified and the server has no default channel".into(),
                    errors: vec![FieldError {
                        field: "channel".into(),
                        code: "MissingParameter".into(),
                        message: None,
                    }],
                }),
            },
        }
    }

    /// Whether `caller` may see `image` at all (account scoping and the anonymous read policy).
    pub fn visible(&self, image: &Image, caller: &Caller) -> bool {
        if let Some(account) = caller.account {
            let account_str = account.to_string();
            let shared = image.activated && (image.public() || image.acl().any(|a| a == account_str));
            if image.owner() != account_str && !shared {
                return false;
            }
        }
        caller.is_authenticated()
            || match self.anonymous_reads {
                AnonymousReads::All => true,
                AnonymousReads::Public => image.public() && image.activated,
                AnonymousReads::None => false,
            }
    }

    /// The image `uuid` as `caller` may see it (GetImage and every `/images/:uuid` route).
    pub fn find(
        &self,
        uuid: &Uuid,
        caller: &Caller,
        allow_all_channels: bool,
    ) -> Result<Arc<Image>, ImageError> {
        let scope = self.channel_scope(caller, allow_all_channels)?;
        let in_scope = |image: &Image| match &scope {
            ChannelScope::One(channel) => image.in_channel(channel),
            ChannelScope::Any => true,
        };
        self.store
            .get(uuid)
            .filter(|image| in_scope(image) && self.visible(image, caller))
            .ok_or(ImageError::NotFound(*uuid))
    }

    /// Like [`find`](Self::find), for changes: with `?account=` the account must own the image.
    pub fn find_owned(&self, uuid: &Uuid, caller: &Caller) -> Result<Arc<Image>, ImageError> {
        let image = self.find(uuid, caller, false)?;
        check_owner(&image, caller)?;
        Ok(image)
    }
}

/// `NotImageOwner` unless the caller's account (if any) owns the image.
pub fn check_owner(image: &Image, caller: &Caller) -> Result<(), ImageError> {
    match caller.account {
        Some(account) if image.owner() != account.to_string() => {
            Err(ImageError::NotImageOwner { account, uuid: image.uuid })
        }
        _ => Ok(()),
    }
}

/// Checks a manifest's `origin`: a uuid string naming another existing image, whose own
/// origins do not lead back to `uuid` (a loop would make both undeletable, and hang importers).
pub(crate) fn check_origin(store: &Store, uuid: &Uuid, origin: &serde_json::Value) -> Result<(), ImageError> {
    let text = origin.as_str().unwrap_or_default();
    let Some(origin_uuid) = crate::params::parse_lower_uuid(text) else {
        return Err(ImageError::invalid_param(
            format!("invalid \"origin\": not a UUID: {origin}"),
            "origin",
            "Invalid",
        ));
    };
    if origin_uuid == *uuid {
        return Err(ImageError::invalid_param("an image cannot be its own origin", "origin", "Invalid"));
    }
    let mut next = Some(origin_uuid);
    let mut steps = 0;
    while let Some(current) = next {
        let Some(image) = store.get(&current) else {
            return if current == origin_uuid {
                Err(ImageError::OriginDoesNotExist(text.to_string()))
            } else {
                Ok(()) // An ancestor further up is missing: not this image's concern.
            };
        };
        steps += 1;
        next = image.origin().and_then(crate::params::parse_lower_uuid);
        if next == Some(*uuid) || steps > 10_000 {
            return Err(ImageError::invalid_param(
                "the origin chain leads back to this image",
                "origin",
                "Invalid",
            ));
        }
    }
    Ok(())
}

/// The message of an `invalid extra parameters` error: `"a", "b"`.
pub(crate) fn quoted_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().map(json_str).collect::<Vec<_>>().join(", ")
}
