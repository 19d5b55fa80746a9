# The bed's images: their names and where scripts/build-images.sh caches them. Sourced.
# shellcheck shell=bash
pause_image=ooda.local/pause:v1
devenv_image=ooda.local/devenv:bookworm
# Keyed by everything the images are built from, so editing any of it rebuilds them.
images_dir="${OODA_CACHE:-$HOME/.cache/ooda}/images/$(cd "$(dirname "${BASH_SOURCE[0]}")" &&
  cat build-images.sh images.sh realnode/pause.c realnode/ooda-start realnode/oci-archive.py | sha256sum | cut -c1-12)"
# tar_of OUT DIR: DIR as an image layer, with fixed owners, order and times (SOURCE_DATE_EPOCH).
tar_of() {
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner -C "$2" -cf "$1" .
}
