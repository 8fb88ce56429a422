# Shared by the .ci/setup-*.sh scripts (sourced, not run).

# apt_install PACKAGE...: installs Debian packages quietly, through sudo when not root.
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
