#!/bin/bash
# Prints, one per line as `package=version`, the Debian packages that provide the shared libraries
# the given binaries load (ldd), pinned to the versions installed here. The images' build stages run
# it and their runtime stages install exactly that list, so a runtime image holds the libraries the
# binaries were linked against and nothing else (no compilers, no -dev packages, no headers).
#
# Libraries that ldd cannot find are an error, except the NVIDIA driver's (libcuda, libnvidia-ml):
# those belong to the host driver and the NVIDIA container toolkit mounts them into GPU containers.
#
# Usage: runtime-packages.sh BINARY...
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 BINARY..." >&2
  exit 2
fi

declare -A packages=()
missing=()
for binary in "$@"; do
  while read -r library arrow path _; do
    [ "$arrow" = "=>" ] || continue  # the vdso and the dynamic loader have no "=>" mapping
    if [ "$path" = "not" ]; then
      case "$library" in
        libcuda.so.* | libnvidia-ml.so.*) continue ;;
        *) missing+=("$binary: $library"); continue ;;
      esac
    fi
    # Debian bookworm is usr-merged: dpkg may list a file under /lib or /usr/lib, by either its
    # link name or the file the link points to.
    real_path="$(readlink -f "$path")"
    owner=""
    for candidate in "$path" "$real_path" "/usr$path" "/usr$real_path" "${path#/usr}" \
                     "${real_path#/usr}"; do
      if owner="$(dpkg-query --search "$candidate" 2>/dev/null)"; then break; fi
      owner=""
    done
    if [ -z "$owner" ]; then
      missing+=("$binary: $path belongs to no Debian package")
      continue
    fi
    package="${owner%%:*}"  # "libfoo1:amd64: /usr/lib/..." -> libfoo1
    packages["$package"]=1
  done < <(ldd "$binary")
done

if [ "${#missing[@]}" -gt 0 ]; then
  printf 'runtime-packages: %s\n' "${missing[@]}" >&2
  exit 1
fi

for package in "${!packages[@]}"; do
  printf '%s=%s\n' "$package" "$(dpkg-query --show --showformat='${Version}' "$package")"
done | sort
