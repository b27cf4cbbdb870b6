# shellcheck shell=bash
# Sourced by image-build/build and image-build/standin-base (bash).

# Make sure the kernel runs arm64 programs through qemu-user-static, registered with the F flag
# (the interpreter is opened once, at registration), so that programs inside a chroot run without
# a copy of qemu in it. Returns non-zero when that cannot be arranged.
ensure_aarch64_binfmt() {
    local misc=/proc/sys/fs/binfmt_misc
    [ -e "$misc/status" ] || mount -t binfmt_misc binfmt_misc "$misc" || return 1
    if [ ! -e "$misc/qemu-aarch64" ]; then
        if command -v update-binfmts >/dev/null; then
            update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
        fi
        # Without binfmt-support's database, systemd's own loader reads the same definition.
        if [ ! -e "$misc/qemu-aarch64" ] && [ -x /lib/systemd/systemd-binfmt ] &&
            [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
            /lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf || true
        fi
    fi
    grep -q '^enabled' "$misc/qemu-aarch64" 2>/dev/null && grep -q '^flags:.*F' "$misc/qemu-aarch64"
}
