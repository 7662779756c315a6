//! The image catalogue: what the configured IMGAPI sources offer, and what placement needs to
//! know of an image (its type, the default disk size, and its origin chain with the size of
//! each file, which the image-locality weight scores).

use imgapi_client::{Client, ClientError, Source};
use serde_json::Value;
use uuid::Uuid;

use crate::placement::ImagePart;

/// An image's facts for placement and for the agent's create.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFacts {
    pub uuid: Uuid,
    /// The manifest's `type` (`zvol` is the only one instances boot).
    pub image_type: String,
    /// `image_size` (MiB): the disk an instance gets by default.
    pub image_size_mib: Option<u64>,
    /// The image, then its origin, its origin's origin...
    pub chain: Vec<ImagePart>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("image {0} is on none of cloudapi's sources")]
    NotFound(Uuid),
    #[error("image source {url} cannot be used")]
    Source {
        url: String,
        #[source]
        source: ClientError,
    },
    #[error("image {uuid}: {message}")]
    Invalid { uuid: Uuid, message: String },
}

/// The longest origin chain followed (IMGAPI itself allows far fewer in practice).
const MAX_CHAIN: usize = 32;

pub struct Catalogue {
    clients: Vec<Client>,
}

impl Catalogue {
    /// Clients for the configured sources (validated with the config).
    pub fn new(sources: &[String]) -> Result<Catalogue, ClientError> {
        let clients =
            sources.iter().map(|s| Client::new(Source::parse(s)?)).collect::<Result<Vec<_>, _>>()?;
        Ok(Catalogue { clients })
    }

    /// The first source's manifest of `uuid`; `None` if no source has it.
    async fn manifest(&self, uuid: Uuid) -> Result<Option<Value>, CatalogueError> {
        for client in &self.clients {
            match client.get_image(uuid).await {
                Ok(manifest) => return Ok(Some(manifest)),
                Err(ClientError::NotFound { .. }) => continue,
                Err(source) => {
                    return Err(CatalogueError::Source { url: imgapi_client::redact(client.url()), source })
                }
            }
        }
        Ok(None)
    }

    /// What placement needs of `uuid`, from the sources; `None` if none has it.
    pub async fn facts(&self, uuid: Uuid) -> Result<Option<ImageFacts>, CatalogueError> {
        let Some(manifest) = self.manifest(uuid).await? else { return Ok(None) };
        let invalid = |message: String| CatalogueError::Invalid { uuid, message };
        let image_type = manifest.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let image_size_mib = manifest.get("image_size").and_then(Value::as_u64);
        let mut chain = Vec::new();
        let mut next = Some((uuid, manifest));
        while let Some((id, manifest)) = next.take() {
            if chain.len() == MAX_CHAIN || chain.iter().any(|p: &ImagePart| p.uuid == id) {
                return Err(invalid(format!("its origin chain is longer than {MAX_CHAIN} or loops")));
            }
            let size = imgapi_client::FileEntry::of_manifest(&manifest).map(|f| f.size).unwrap_or(0);
            chain.push(ImagePart { uuid: id, size });
            let origin = imgapi_client::origin_of(&manifest).map_err(|e| invalid(e.to_string()))?;
            if let Some(origin) = origin {
                let manifest = self
                    .manifest(origin)
                    .await?
                    .ok_or_else(|| invalid(format!("its origin {origin} is on no source")))?;
                next = Some((origin, manifest));
            }
        }
        Ok(Some(ImageFacts { uuid, image_type, image_size_mib, chain }))
    }

    /// Every source's images, the first source's manifest where several have one.
    pub async fn list(&self) -> Result<Vec<Value>, CatalogueError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut images = Vec::new();
        for client in &self.clients {
            let listed = client.list_images(&[]).await.map_err(|source| CatalogueError::Source {
                url: imgapi_client::redact(client.url()),
                source,
            })?;
            for manifest in listed {
                let uuid = manifest.get("uuid").and_then(Value::as_str).map(str::to_string);
                if uuid.is_some_and(|u| seen.insert(u)) {
                    images.push(manifest);
                }
            }
        }
        Ok(images)
    }
}
