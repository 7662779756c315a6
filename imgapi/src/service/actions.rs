//! The image actions: activate, enable, disable, ACL changes, channel-add, file and icon
//! uploads, and delete. Each checks its preconditions under the store's write lock, so two
//! concurrent requests cannot both pass a check that only one of them may pass.

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::{check_owner, Caller, ChannelScope, ImageError, Service};
use crate::manifest::validate::{validate_full, FieldError};
use crate::manifest::{now_timestamp, Compression, Image};
use crate::params::parse_lower_uuid;
use crate::store::upload::StagedFile;
use crate::store::Store;

/// The largest icon the reference accepts: 128 KiB.
pub const MAX_ICON_SIZE: u64 = 128 * 1024;

/// Icon content types the reference accepts.
pub const ICON_TYPES: &[&str] = &["image/jpeg", "image/gif", "image/png"];

/// What an AddImageFile request declared, checked against what arrived.
#[derive(Debug, Clone)]
pub struct FileUpload {
    pub compression: Compression,
    pub sha1: Option<String>,
    pub dataset_guid: Option<String>,
    pub content_length: Option<u64>,
}

impl Service {
    /// Runs `change` on the image the caller owns, re-validates, and stores the result.
    pub(super) async fn change(
        &self,
        uuid: &Uuid,
        caller: &Caller,
        change: impl FnOnce(&mut Image) -> Result<(), ImageError>,
    ) -> Result<Arc<Image>, ImageError> {
        self.find_owned(uuid, caller)?;
        let mode = self.validation_mode();
        let if_match = caller.if_match.clone();
        self.store
            .update(uuid, |image| {
                // Preconditions hold for the locked record, not for an earlier read of it.
                check_owner(image, caller)?;
                if let Some(list) = if_match {
                    let etag = image.etag();
                    if !crate::manifest::etag_matches(&list, &etag) {
                        return Err(ImageError::PreconditionFailed {
                            list,
                            etag: etag.trim_matches('"').into(),
                        });
                    }
                }
                change(image)?;
                let errors = validate_full(&image.validation_view(), mode);
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(ImageError::validation(errors))
                }
            })
            .await
    }

    /// ActivateImage: needs a file; sets `published_at` unless an import brought one.
    pub async fn activate(&self, uuid: &Uuid, caller: &Caller) -> Result<Arc<Image>, ImageError> {
        self.change(uuid, caller, |image| {
            if image.activated {
                return Err(ImageError::AlreadyActivated(image.uuid));
            }
            if image.file.is_none() {
                return Err(ImageError::NoActivationNoFile(image.uuid));
            }
            image.activated = true;
            if image.str_field("published_at").is_none() {
                image.fields.insert("published_at".into(), Value::from(now_timestamp()));
            }
            image.fields.remove("expires_at");
            image.recompute_state();
            Ok(())
        })
        .await
    }

    /// EnableImage / DisableImage (idempotent).
    pub async fn set_disabled(
        &self,
        uuid: &Uuid,
        caller: &Caller,
        disabled: bool,
    ) -> Result<Arc<Image>, ImageError> {
        self.change(uuid, caller, |image| {
            image.fields.insert("disabled".into(), Value::Bool(disabled));
            image.recompute_state();
            Ok(())
        })
        .await
    }

    /// AddImageAcl / RemoveImageAcl: `body` must be an array of uuids.
    pub async fn change_acl(
        &self,
        uuid: &Uuid,
        caller: &Caller,
        body: Value,
        add: bool,
    ) -> Result<Arc<Image>, ImageError> {
        let Value::Array(items) = body else {
            return Err(ImageError::invalid_param("invalid image \"acl\" (not an array)", "acl", "Invalid"));
        };
        let mut accounts = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str().and_then(parse_lower_uuid) {
                Some(u) => accounts.push(u.to_string()),
                None => {
                    let shown = item.as_str().map(str::to_owned).unwrap_or_else(|| item.to_string());
                    return Err(ImageError::invalid_param(
                        format!("invalid image \"acl\" (item {i} is not a UUID): {shown}"),
                        "acl",
                        "Invalid",
                    ));
                }
            }
        }
        self.change(uuid, caller, |image| {
            let mut acl: Vec<String> = image.acl().map(str::to_owned).collect();
            if add {
                for a in accounts {
                    if !acl.contains(&a) {
                        acl.push(a);
                    }
                }
            } else {
                acl.retain(|a| !accounts.contains(a));
            }
            if acl.is_empty() {
                image.fields.remove("acl");
            } else {
                image.fields.insert("acl".into(), Value::from(acl));
            }
            Ok(())
        })
        .await
    }

    /// ChannelAddImage: `{"channel": NAME}` adds the image to another channel.
    pub async fn channel_add(
        &self,
        uuid: &Uuid,
        caller: &Caller,
        body: Value,
    ) -> Result<Arc<Image>, ImageError> {
        let name = body.get("channel").and_then(Value::as_str).unwrap_or_default().to_string();
        if !self.channels.iter().any(|c| c.name == name) {
            return Err(ImageError::ValidationFailed {
                message: format!("unknown channel: {name}"),
                errors: vec![FieldError { field: "channel".into(), code: "Invalid".into(), message: None }],
            });
        }
        self.change(uuid, caller, |image| {
            let mut channels: Vec<String> = image.channels().map(str::to_owned).collect();
            if !channels.contains(&name) {
                channels.push(name);
            }
            image.fields.insert("channels".into(), Value::from(channels));
            Ok(())
        })
        .await
    }

    /// Checks before an AddImageFile body is read: the image exists, the caller owns it, and
    /// it is not activated. (Checked again when the file is committed.)
    pub fn precheck_file(&self, uuid: &Uuid, caller: &Caller, upload: &FileUpload) -> Result<(), ImageError> {
        let image = self.find_owned(uuid, caller)?;
        if image.activated {
            return Err(ImageError::FilesImmutable(image.uuid));
        }
        if let Some(length) = upload.content_length {
            if length > self.max_file_size {
                return Err(ImageError::Upload(format!(
                    "image file size, {length}, exceeds the maximum allowed file size, {}",
                    self.max_file_size
                )));
            }
        }
        Ok(())
    }

    /// AddImageFile, second half: checks what arrived and makes it the image's file. The
    /// staged file is deleted when any check fails (it is dropped).
    pub async fn commit_file(
        &self,
        uuid: &Uuid,
        caller: &Caller,
        upload: FileUpload,
        staged: StagedFile,
    ) -> Result<Arc<Image>, ImageError> {
        if staged.size == 0 {
            return Err(ImageError::Download(
                "image file size is 0 bytes, empty files are not allowed".into(),
            ));
        }
        if let Some(length) = upload.content_length {
            if length != staged.size {
                return Err(ImageError::Download(format!(
                    "\"Content-Length\" header, {length}, does not match uploaded size, {}",
                    staged.size
                )));
            }
        }
        if let Some(want) = &upload.sha1 {
            if !want.eq_ignore_ascii_case(&staged.sha1) {
                return Err(ImageError::Download(format!(
                    "\"sha1\" hash, {want}, does not match the uploaded file sha1 hash, {}",
                    staged.sha1
                )));
            }
        }
        self.find_owned(uuid, caller)?;
        self.store
            .commit_file(
                uuid,
                staged,
                |image| {
                    if image.activated {
                        Err(ImageError::FilesImmutable(image.uuid))
                    } else {
                        Ok(())
                    }
                },
                |image, mut file| {
                    file.compression = upload.compression;
                    file.dataset_guid = upload.dataset_guid;
                    image.file = Some(file);
                },
            )
            .await
    }

    /// AddImageIcon: `bytes` is the whole (small) body.
    pub async fn add_icon(
        &self,
        uuid: &Uuid,
        caller: &Caller,
        content_type: &str,
        bytes: bytes::Bytes,
        sha1: Option<&str>,
    ) -> Result<Arc<Image>, ImageError> {
        self.find_owned(uuid, caller)?;
        if let Some(want) = sha1 {
            use sha1::Digest;
            let got = hex::encode(sha1::Sha1::digest(&bytes));
            if !want.eq_ignore_ascii_case(&got) {
                return Err(ImageError::Upload(format!(
                    "\"sha1\" hash, {want}, does not match the uploaded icon sha1 hash, {got}"
                )));
            }
        }
        self.store.commit_icon(uuid, bytes, content_type.to_string()).await
    }

    /// DeleteImageIcon: 404 when there is no icon (the reference crashes).
    pub async fn delete_icon(&self, uuid: &Uuid, caller: &Caller) -> Result<Arc<Image>, ImageError> {
        self.change(uuid, caller, |image| match image.icon.take() {
            Some(_) => Ok(()),
            None => Err(ImageError::NoIcon(image.uuid)),
        })
        .await
    }

    /// DeleteImage. With channels, an image in several channels only leaves the request's
    /// channel unless `force_all_channels`. Refused while another image names it as origin.
    /// Returns the image when it was only removed from a channel.
    pub async fn delete_image(
        &self,
        uuid: &Uuid,
        caller: &Caller,
        force_all_channels: bool,
    ) -> Result<Option<Arc<Image>>, ImageError> {
        self.find_owned(uuid, caller)?;
        let scope = self.channel_scope(caller, false)?;
        // Decided on the locked record: two requests leaving two channels at once must not
        // both think another channel remains.
        self.store
            .delete_or_update(uuid, |store: &Store, image: &Image| {
                check_owner(image, caller)?;
                if let ChannelScope::One(channel) = &scope {
                    if image.channels().count() > 1 && !force_all_channels {
                        let mut next = image.clone();
                        let rest: Vec<String> =
                            image.channels().filter(|c| c != channel).map(str::to_owned).collect();
                        next.fields.insert("channels".into(), Value::from(rest));
                        return Ok(Some(next));
                    }
                }
                let dependents: Vec<Uuid> = store.dependents(&image.uuid).iter().map(|i| i.uuid).collect();
                if dependents.is_empty() {
                    Ok(None)
                } else {
                    Err(ImageError::HasDependents { uuid: image.uuid, dependents })
                }
            })
            .await
    }
}
