//! Images on the node: whether one is there and what it is, and making it: a pull, a build from an
//! uploaded context, a load from an uploaded archive, each checked against `bai.lock` where it pins one.

use super::*;

impl Engine {
    /// Whether an image is present under `reference` (a tag, or a `repo@digest`).
    pub async fn image_exists(&self, reference: &str) -> Result<bool, DockerError> {
        let segment = image_segment(reference)?;
        match self.docker.inspect_image(&segment).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(api(format!("inspecting image {reference}"))(e)),
        }
    }

    /// The id and repository digests (`repo@sha256:…`) of the image `reference` names, or `None` when
    /// there is no such image. A string that is not an image reference is refused
    /// ([`DockerError::InvalidReference`]), never looked up.
    pub async fn image_facts(&self, reference: &str) -> Result<Option<(String, Vec<String>)>, DockerError> {
        let segment = image_segment(reference)?;
        match self.docker.inspect_image(&segment).await {
            Ok(image) => Ok(Some((image.id.unwrap_or_default(), image.repo_digests.unwrap_or_default()))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspecting image {reference}"))(e)),
        }
    }

    /// Makes the image present under `spec.reference` and returns its id. A pull is skipped when the
    /// reference (at the pinned digest, if any) is already there; a build or an archive load always runs,
    /// because the reference may name older content and Docker's cache makes the repeat cheap.
    pub async fn ensure_image(
        &self,
        req: &EnsureImage,
        blob_path: &dyn Fn(&str) -> PathBuf,
    ) -> Result<String, DockerError> {
        let spec = &req.spec;
        // Refused before anything is pulled, built, loaded or recorded.
        let segment = image_segment(&spec.reference)?;
        let locked = req.locked.clone().unwrap_or_default();
        match &req.source {
            ImageRecipe::Pull => {
                // The lock's digest pins the pull as the config's own `digest` would; the config's wins
                // (the controller refuses a lock that disagrees with it before getting here).
                let mut pinned = spec.clone();
                pinned.digest = spec.digest.clone().or_else(|| locked.digest.clone());
                self.pull(&pinned).await?;
                if let Some(digest) = &pinned.digest {
                    let digests = self.image_facts(&spec.reference).await?.map(|f| f.1).unwrap_or_default();
                    if !digests.iter().any(|d| d.ends_with(&format!("@{digest}"))) {
                        return Err(DockerError::Locked {
                            image: req.name.clone(),
                            reference: spec.reference.clone(),
                            message: format!("bai.lock pins digest {digest}, but the node's copy has {digests:?}"),
                        });
                    }
                }
            }
            ImageRecipe::Build { context_sha256, dockerfile } => {
                // A node whose ref already is the locked image has exactly it: building again could only
                // give another id (builds are not reproducible).
                let current = self.image_facts(&spec.reference).await?.map(|f| f.0);
                if locked.image_id.is_none() || current != locked.image_id {
                    self.build(spec, context_sha256, dockerfile, &blob_path(context_sha256)).await?
                }
            }
            ImageRecipe::Archive { sha256 } => {
                self.load(spec, sha256, &blob_path(sha256)).await?;
                if let Some(want) = &locked.image_id {
                    let got = self.image_facts(&spec.reference).await?.map(|f| f.0);
                    if got.as_deref() != Some(want.as_str()) {
                        return Err(DockerError::Locked {
                            image: req.name.clone(),
                            reference: spec.reference.clone(),
                            message: format!(
                                "the archive loaded as {}, but bai.lock records {want}",
                                got.as_deref().unwrap_or("nothing")
                            ),
                        });
                    }
                }
            }
        }
        let docker = &self.docker;
        match docker.inspect_image(&segment).await {
            Ok(image) => Ok(image.id.unwrap_or_default()),
            Err(e) if is_not_found(&e) => match req.source {
                // `docker load` tags from the archive's own manifest, which may not name this reference.
                ImageRecipe::Archive { .. } => Err(DockerError::NotInArchive { reference: spec.reference.clone() }),
                _ => Err(DockerError::ImageMissing { reference: spec.reference.clone() }),
            },
            Err(e) => Err(api(format!("inspecting image {}", spec.reference))(e)),
        }
    }

    pub(super) async fn pull(&self, spec: &ImageSpec) -> Result<(), DockerError> {
        let docker = &self.docker;
        let reference = &spec.reference;
        let (repo, tag) = split_reference(reference);
        // The digest may come from the lock rather than the reference: `repo@digest` is checked whole.
        let pinned = spec.digest.as_ref().map(|digest| format!("{repo}@{digest}"));
        if let Some(pinned) = &pinned {
            image_segment(pinned)?;
        }
        match docker.inspect_image(&image_segment(reference)?).await {
            Ok(image) => {
                let pinned = spec.digest.as_ref().is_none_or(|digest| {
                    image.repo_digests.unwrap_or_default().iter().any(|d| d.ends_with(&format!("@{digest}")))
                });
                if pinned {
                    return Ok(());
                }
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api(format!("inspecting image {reference}"))(e)),
        }
        // With a pinned digest, pull exactly that content, then give it the reference's tag, so that a
        // moved tag in the registry cannot change what runs.
        let wanted = spec.digest.as_deref().unwrap_or(tag);
        let options = CreateImageOptionsBuilder::default().from_image(repo).tag(wanted).build();
        let mut progress = docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            item.map_err(|e| DockerError::Pull { reference: reference.clone(), message: message_of(&e) })?;
        }
        if let Some(pinned) = &pinned {
            let options = TagImageOptionsBuilder::default().repo(repo).tag(tag).build();
            docker
                .tag_image(&image_segment(pinned)?, Some(options))
                .await
                .map_err(api(format!("tagging {pinned} as {reference}")))?;
        }
        Ok(())
    }

    pub(super) async fn build(
        &self,
        spec: &ImageSpec,
        sha256: &str,
        dockerfile: &str,
        blob: &Path,
    ) -> Result<(), DockerError> {
        let docker = &self.docker;
        let reference = &spec.reference;
        let context = self.open_blob(spec, sha256, blob).await?;
        // `forcerm`: a failed step must not leave its intermediate container (and the image under it)
        // behind on the node.
        let options =
            BuildImageOptionsBuilder::default().dockerfile(dockerfile).t(reference).rm(true).forcerm(true).build();
        let body = bollard::body_try_stream(read_chunks(context));
        let mut output = docker.build_image(options, None, Some(body));
        let mut log: VecDeque<String> = VecDeque::with_capacity(BUILD_LOG_TAIL);
        while let Some(item) = output.next().await {
            match item {
                Ok(info) => {
                    for line in info.stream.iter().flat_map(|s| s.lines()).filter(|l| !l.trim().is_empty()) {
                        if log.len() == BUILD_LOG_TAIL {
                            log.pop_front();
                        }
                        log.push_back(line.to_string());
                    }
                }
                Err(e) => {
                    return Err(DockerError::Build {
                        reference: reference.clone(),
                        message: message_of(&e),
                        log: log.into(),
                    });
                }
            }
        }
        Ok(())
    }

    pub(super) async fn load(&self, spec: &ImageSpec, sha256: &str, blob: &Path) -> Result<(), DockerError> {
        let docker = &self.docker;
        let archive = self.open_blob(spec, sha256, blob).await?;
        let options = ImportImageOptionsBuilder::default().quiet(true).build();
        let mut output = docker.import_image_stream(options, read_chunks(archive), None);
        while let Some(item) = output.next().await {
            item.map_err(|e| DockerError::Load { reference: spec.reference.clone(), message: message_of(&e) })?;
        }
        Ok(())
    }

    pub(super) async fn open_blob(
        &self,
        spec: &ImageSpec,
        sha256: &str,
        path: &Path,
    ) -> Result<tokio::fs::File, DockerError> {
        tokio::fs::File::open(path).await.map_err(|source| DockerError::Blob {
            reference: spec.reference.clone(),
            sha256: sha256.to_string(),
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Splits an image reference into the repository and the tag (or `sha256:` digest) the engine's pull
/// endpoint wants, the way the Docker CLI does: no tag means `latest`, never "every tag".
pub(super) fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, digest);
    }
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (&reference[..name_start + i], &reference[name_start + i + 1..]),
        None => (reference, "latest"),
    }
}

/// The digest part (`sha256:…`) of the repository digest matching `reference`'s repository, else of the
/// first one.
pub fn repo_digest(reference: &str, repo_digests: &[String]) -> Option<String> {
    let (repo, _) = split_reference(reference);
    let digest_of = |d: &String| d.split_once('@').map(|(_, digest)| digest.to_string());
    repo_digests
        .iter()
        .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
        .or(repo_digests.first())
        .and_then(digest_of)
}
