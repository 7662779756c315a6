//! Creating an instance: the request checked against the image, the host and the other
//! instances (names, MACs, switches), then the disk provisioned and the record persisted.

use super::*;

/// What `create` is asked for.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The uuid to give it (cloudapi picks them, unique across its fleet); `None`: a new one.
    pub uuid: Option<Uuid>,
    /// `None`: a blank disk of `disk_mib` (for an install from an ISO).
    pub image: Option<Uuid>,
    pub alias: Option<String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// `None`: the image's size.
    pub disk_mib: Option<u64>,
    /// One per NIC.
    pub nics: Vec<NicRequest>,
    pub firmware: Option<Firmware>,
    pub guest: GuestConfig,
    /// An installer ISO attached as a CD, and whether to boot from it.
    pub cdrom: Option<String>,
    pub boot_from_cdrom: bool,
    pub start: bool,
}

/// The most a disk may be: 64 TiB.
const MAX_DISK_MIB: u64 = 64 * 1024 * 1024;

/// Checks what a request asks for on its own (sizes, alias, NICs, guest configuration) against
/// its image; the disk size the instance gets. What depends on the host and the other instances
/// (the ISO, MACs, switches) is checked by `create`.
fn check_request(request: &CreateRequest, image: Option<&LocalImage>) -> Result<u64, InstanceError> {
    let invalid = |m: String| Err(InstanceError::Invalid(m));
    if !(1..=64).contains(&request.vcpus) {
        return invalid(format!("vcpus must be between 1 and 64, not {}", request.vcpus));
    }
    if !(32..=1024 * 1024).contains(&request.memory_mib) {
        return invalid(format!("memory_mib must be between 32 and 1048576, not {}", request.memory_mib));
    }
    if let Some(alias) = &request.alias {
        if alias.is_empty() || alias.len() > 64 || alias.chars().any(|c| c.is_control()) {
            return invalid("alias must be 1 to 64 printable characters".into());
        }
    }
    if request.nics.len() > 8 {
        return invalid("nics: at most 8".into());
    }
    for nic in &request.nics {
        nic.check().map_err(InstanceError::Invalid)?;
    }
    request.guest.validate().map_err(InstanceError::Invalid)?;
    if let Some(image) = image.filter(|i| i.meta.image_type != "zvol") {
        return Err(InstanceError::UnsupportedImage(format!(
            "image {} is a {:?} image, not a disk: instances boot only \"zvol\" images",
            image.meta.uuid, image.meta.image_type
        )));
    }
    let Some(image) = image else {
        return match request.disk_mib {
            Some(disk) if (1..=MAX_DISK_MIB).contains(&disk) => Ok(disk),
            Some(_) => invalid("disk_mib must be between 1 and 67108864 (64 TiB)".into()),
            None => invalid("an instance without an image needs disk_mib: the size of its blank disk".into()),
        };
    };
    // The larger of the manifest's `image_size` and the raw disk really stored: a manifest
    // that understates its disk must not give instances a truncated copy of it.
    let stored_mib = (image.content == ContentKind::RawDisk).then(|| image.content_size.div_ceil(MIB));
    let image_mib = image.meta.image_size_mib.max(stored_mib).unwrap_or(0);
    match request.disk_mib {
        Some(disk) if disk < image_mib => {
            invalid(format!("disk_mib must be at least the image's {image_mib} MiB, not {disk}"))
        }
        Some(disk) if disk > MAX_DISK_MIB => invalid("disk_mib must be at most 67108864 (64 TiB)".into()),
        Some(disk) => Ok(disk),
        None => Ok(image_mib),
    }
}

impl Instances {
    /// Creates an instance (and starts it when asked). Blocking.
    pub fn create(self: &Arc<Self>, request: CreateRequest) -> Result<InstanceRecord, InstanceError> {
        let image = match request.image {
            Some(uuid) => Some(self.images.get(&uuid)?.ok_or(InstanceError::ImageNotFound(uuid))?),
            None => None,
        };
        let disk_mib = check_request(&request, image.as_ref())?;
        // The record goes into the table while its ISO cannot be renamed or deleted.
        let (uuid, record, slot) =
            self.with_cdrom(request.cdrom.as_deref(), request.boot_from_cdrom, || {
                let mut table = lock(&self.table);
                let existing: Vec<InstanceRecord> = table.values().map(|s| s.snapshot()).collect();
                let vm_name_taken =
                    |uuid: &Uuid| existing.iter().any(|r| r.vm_name == InstanceRecord::vm_name_for(uuid));
                let uuid = match request.uuid {
                    // A retried create finds its instance; a clash of VM names is as bad.
                    Some(uuid) if vm_name_taken(&uuid) => return Err(InstanceError::Exists(uuid)),
                    Some(uuid) => uuid,
                    None => {
                        let mut uuid = Uuid::new_v4();
                        while vm_name_taken(&uuid) {
                            uuid = Uuid::new_v4();
                        }
                        uuid
                    }
                };
                let owner_of = |mac: &str| existing.iter().find(|r| r.nics.iter().any(|n| n.mac == mac));
                let mut nics: Vec<NicRecord> = Vec::new();
                for nic in &request.nics {
                    if let NicNetwork::Switch(name) = nic.target() {
                        // Under the table lock, which a switch's deletion holds.
                        self.switches.get(name).map_err(|e| InstanceError::Invalid(e.to_string()))?;
                    }
                    let mac = match nic.check().map_err(InstanceError::Invalid)? {
                        Some(mac) if nics.iter().any(|n| n.mac == mac) => {
                            return Err(InstanceError::Invalid(format!("MAC {mac} is given to two NICs")));
                        }
                        Some(mac) => match owner_of(&mac) {
                            Some(owner) => {
                                return Err(InstanceError::Invalid(format!(
                                    "MAC {mac} is taken by instance {}",
                                    owner.uuid
                                )));
                            }
                            None => mac,
                        },
                        None => {
                            let asked = |mac: &str| {
                                request
                                    .nics
                                    .iter()
                                    .any(|n| n.mac.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(mac)))
                            };
                            let mut mac = record::random_mac();
                            while owner_of(&mac).is_some() || nics.iter().any(|n| n.mac == mac) || asked(&mac)
                            {
                                mac = record::random_mac();
                            }
                            mac
                        }
                    };
                    nics.push(NicRecord { mac, network: nic.network.clone(), vlan: nic.vlan });
                }
                let mut record = InstanceRecord {
                    uuid,
                    alias: request.alias.clone().unwrap_or_else(|| InstanceRecord::vm_name_for(&uuid)),
                    image: image.as_ref().map(|i| i.meta.uuid),
                    vcpus: request.vcpus,
                    memory_mib: request.memory_mib,
                    disk_mib,
                    nics,
                    firmware: request.firmware.unwrap_or_default(),
                    vm_name: InstanceRecord::vm_name_for(&uuid),
                    state: InstanceState::Provisioning,
                    reason: String::new(),
                    pid: None,
                    created_at: record::now(),
                    history: Vec::new(),
                    guest: request.guest.clone(),
                    cdrom: request.cdrom.clone(),
                    boot_from_cdrom: request.boot_from_cdrom,
                };
                let from = match &image {
                    Some(image) => format!("creating from image {}", image.meta.uuid),
                    None => format!("creating with a blank {disk_mib} MiB disk"),
                };
                record.set_state(InstanceState::Provisioning, from);
                let slot = self.new_slot(record.clone())?;
                table.insert(uuid, slot.clone());
                Ok((uuid, record, slot))
            })?;
        let mut provisioned = record;
        let next = provisioned.state.apply(Event::Provisioned)?;
        provisioned.set_state(next, "created");
        if let Err(error) = self.disks.create(&provisioned, image.as_ref()) {
            lock(&self.table).remove(&uuid);
            slot.console.close();
            lock(&slot.metadata).take();
            let _ = fs::remove_dir_all(self.settings.run_dir.join(uuid.to_string()));
            let _ = fs::remove_file(self.settings.state_dir.join(format!("{uuid}.log")));
            return Err(error.into());
        }
        self.publish(&slot, provisioned.clone());
        tracing::info!(%uuid, image = ?provisioned.image, "instance created");
        if request.start {
            return self.start(&uuid);
        }
        Ok(provisioned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ImageMeta;

    fn request() -> CreateRequest {
        CreateRequest {
            uuid: None,
            image: None,
            alias: None,
            vcpus: 1,
            memory_mib: 512,
            disk_mib: Some(1024),
            nics: vec![NicRequest::on("user")],
            firmware: None,
            guest: GuestConfig::default(),
            cdrom: None,
            boot_from_cdrom: false,
            start: true,
        }
    }

    fn image(image_size_mib: Option<u64>, stored_bytes: u64) -> LocalImage {
        LocalImage {
            meta: ImageMeta {
                uuid: Uuid::nil(),
                name: "i".into(),
                version: "1".into(),
                os: "linux".into(),
                image_type: "zvol".into(),
                origin: None,
                sha1: String::new(),
                size: 1,
                compression: "gzip".into(),
                image_size_mib,
                source: String::new(),
            },
            content: ContentKind::RawDisk,
            location: String::new(),
            content_size: stored_bytes,
            imported_at: String::new(),
        }
    }

    fn refused(request: CreateRequest, image: Option<&LocalImage>) -> String {
        match check_request(&request, image) {
            Err(InstanceError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn sizes_and_names_have_bounds() {
        assert!(refused(CreateRequest { vcpus: 0, ..request() }, None).contains("vcpus"));
        assert!(refused(CreateRequest { vcpus: 65, ..request() }, None).contains("vcpus"));
        assert!(refused(CreateRequest { memory_mib: 31, ..request() }, None).contains("memory"));
        assert!(refused(CreateRequest { alias: Some(String::new()), ..request() }, None).contains("alias"));
        assert!(refused(CreateRequest { alias: Some("a\nb".into()), ..request() }, None).contains("alias"));
        let nics = vec![NicRequest::on("user"); 9];
        assert!(refused(CreateRequest { nics, ..request() }, None).contains("nics: at most 8"));
        assert_eq!(check_request(&request(), None).unwrap(), 1024);
    }

    #[test]
    fn only_disk_images_make_instances() {
        let mut zone = image(Some(100), 200 * MIB);
        zone.meta.image_type = "zone-dataset".into();
        let request = CreateRequest { disk_mib: None, ..request() };
        match check_request(&request, Some(&zone)) {
            Err(e @ InstanceError::UnsupportedImage(_)) => {
                assert_eq!(e.code(), ErrorCode::UnsupportedImage);
                assert!(e.to_string().contains("\"zone-dataset\" image, not a disk"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_blank_disk_needs_a_size_and_an_image_sets_the_least() {
        assert!(refused(CreateRequest { disk_mib: None, ..request() }, None).contains("needs disk_mib"));
        assert!(refused(CreateRequest { disk_mib: Some(0), ..request() }, None)
            .contains("disk_mib must be between 1 and"));
        // The manifest says 100 MiB, the stored disk is 200 MiB: the larger wins.
        let image = image(Some(100), 200 * MIB);
        assert_eq!(check_request(&CreateRequest { disk_mib: None, ..request() }, Some(&image)).unwrap(), 200);
        let small = CreateRequest { disk_mib: Some(150), ..request() };
        assert!(refused(small, Some(&image)).contains("at least the image's 200 MiB"));
        let huge = CreateRequest { disk_mib: Some(MAX_DISK_MIB + 1), ..request() };
        assert!(refused(huge, Some(&image)).contains("64 TiB"));
    }
}
