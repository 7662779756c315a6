//! The IMGAPI protocol (the Joyent/Triton image API that SmartOS `imgadm` speaks) for Rust:
//! `sdc-clients`' `IMGAPI` for Rust programs. Two halves:
//!
//! - the protocol's types: [`Compression`], the file entry of a manifest ([`FileEntry`]), the
//!   error body every IMGAPI server answers with ([`ErrorBody`]), and a source URL with its
//!   credentials and channel ([`Source`], [`redact`]);
//! - a typed, streaming [`Client`]: ping, every page of ListImages, GetImage, GetImageFile
//!   resumed with a Range request, CreateImage, AddImageFile (a streamed body), ActivateImage
//!   and DeleteImage, with Basic or HTTP Signature auth ([`Auth`]).
//!
//! Files are never held whole in memory: downloads are streams of chunks, uploads take a
//! streamed body.
//!
//! ```no_run
//! # async fn demo() -> Result<(), imgapi_client::ClientError> {
//! use imgapi_client::{Client, FileEntry, Source};
//!
//! let source = Source::parse("http://admin:secret@images.example.com:8080/?channel=release")?;
//! let client = Client::new(source)?;
//! for manifest in client.list_images(&[("os", "linux")]).await? {
//!     println!("{} {}", manifest["name"], manifest["version"]);
//! }
//! let uuid = "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b".parse().unwrap();
//! let manifest = client.get_image(uuid).await?;
//! let file = FileEntry::of_manifest(&manifest).expect("a manifest with a file");
//! let mut download = client.get_file(uuid, 0).await?;
//! while let Some(chunk) = download.chunk().await? {
//!     // ... hash and store `chunk`; `file.size` and `file.sha1` say what to expect.
//! #   let _ = (&chunk, &file);
//! }
//! # Ok(()) }
//! ```

mod auth;
mod client;
mod compression;
mod error;
mod manifest;
mod source;

pub use auth::{Auth, KeyError, SignedParts, SigningKey};
pub use client::{Client, ClientOptions, FileDownload, FileUpload, PAGE_SIZE};
pub use compression::Compression;
pub use error::{ClientError, ErrorAnswer, ErrorBody};
pub use manifest::{origin_of, FileEntry, ManifestError};
pub use source::{redact, Source, SourceError};
