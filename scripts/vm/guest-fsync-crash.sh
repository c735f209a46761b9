#!/bin/bash
# Guest side of scripts/vm/fsync-crash.sh: for each filesystem, rounds of
# "write files, fsync each (and its directory), log it once fsync returned;
# kill -9 zerofs; restart, reattach, replay the journal, fsck; every logged
# file must be there with its content".
set -uo pipefail
. /mnt/share/guest-lib.sh
ROUNDS=${1:-10}; shift; FSES=("$@")
# Unpacked aside, not installed: dpkg -i would run btrfs-progs' initramfs
# trigger (minutes under emulation), and unpacking over / would replace the
# merged-/usr symlinks.
step "unpacking xfsprogs and btrfs-progs"
for d in /mnt/share/debs/*.deb; do dpkg-deb -x "$d" /opt/fsprogs; done
export PATH=/opt/fsprogs/usr/sbin:/opt/fsprogs/sbin:/opt/fsprogs/usr/bin:/opt/fsprogs/bin:$PATH
export LD_LIBRARY_PATH=/opt/fsprogs/usr/lib/x86_64-linux-gnu:/opt/fsprogs/lib/x86_64-linux-gnu
mkfs.xfs -V && btrfs --version || exit 1
M=/mnt/t; mkdir -p $M
fails=0
fsck_dev() { # fs: read-only check; 0 = clean
  case $1 in
    ext4) e2fsck -f -n /dev/nbd0 ;;
    xfs) xfs_repair -n /dev/nbd0 ;;
    btrfs) btrfs check /dev/nbd0 ;;
  esac >/tmp/fsck.out 2>&1
}
writer() { # writes f<round>-<i> until an error; logs "name sha1" after fsync of file and directory
  local i=0 f
  while :; do
    i=$((i + 1)); f=f$1-$i
    head -c $(( (RANDOM % 256 + 1) * 4096 )) /dev/urandom >/tmp/cur
    dd if=/tmp/cur of=$M/$f bs=1M conv=fsync status=none 2>/dev/null || break
    sync $M 2>/dev/null || break
    echo "$f $(sha1sum </tmp/cur | cut -c1-40)" >>/tmp/synced.log
  done
}
for fs in "${FSES[@]}"; do
  step "$fs: mkfs"
  rm -f /tmp/synced.log; touch /tmp/synced.log
  attach 0 /dev/nbd0 || exit 1
  case $fs in
    ext4) mkfs.ext4 -q -F /dev/nbd0 ;;
    xfs) mkfs.xfs -q -f /dev/nbd0 ;;
    btrfs) mkfs.btrfs -q -f /dev/nbd0 ;;
  esac || { echo "FAIL: mkfs.$fs"; exit 1; }
  sync
  for round in $(seq "$ROUNDS"); do
    mount -t $fs /dev/nbd0 $M || { echo "FAIL: $fs round $round: mount"; fails=$((fails + 1)); break; }
    writer $round & wp=$!
    sleep $((RANDOM % 5 + 2))
    before=$(wc -l </tmp/synced.log)
    ans=$(ask kill 0)
    sleep 1; kill $wp 2>/dev/null; wait $wp 2>/dev/null
    state=$(ask list 0 | grep -o 'interrupted' | head -1)
    umount $M 2>/dev/null || umount -l $M
    detach 0
    ask clear 0 >/dev/null
    echo 3 >/proc/sys/vm/drop_caches
    attach 0 /dev/nbd0 || exit 1
    echo "   reattached: $(tail -1 /tmp/attach0.log | cut -c1-160); size $(blockdev --getsize64 /dev/nbd0)"
    # The mount replays the journal (log); then the check must be clean.
    mount -t $fs /dev/nbd0 $M && umount $M || { echo "FAIL: $fs round $round: mount after crash"; fails=$((fails + 1)); }
    if fsck_dev $fs; then fsck=clean; else fsck="NOT CLEAN"; fails=$((fails + 1)); tail -20 /tmp/fsck.out; fi
    mount -t $fs /dev/nbd0 $M
    lost=0
    while read -r f sha; do
      [ "$(sha1sum <$M/$f 2>/dev/null | cut -c1-40)" = "$sha" ] || { lost=$((lost + 1)); echo "   lost or wrong: $f"; }
    done </tmp/synced.log
    [ $lost = 0 ] || fails=$((fails + 1))
    umount $M
    echo "RESULT: $fs round $round: $(wc -l </tmp/synced.log) synced files ($before before the kill), $lost lost; fsck $fsck; device ${state:-not interrupted}"
  done
  detach 0
done
echo "RESULT: total failures: $fails"
[ $fails = 0 ]
