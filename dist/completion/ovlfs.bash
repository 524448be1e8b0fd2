# bash completion for ovlfs and ovlctl

_ovlfs() {
	local cur prev
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD-1]}
	if [[ $prev == -o ]]; then
		local opts="lowerdir= upperdir= workdir= redirect_dir= userxattr uuid= volatile xino=
			metacopy= index= nfs_export= verity= noatime nodiratime relatime uidmapping= gidmapping=
			squash_to_root squash_to_uid= squash_to_gid= xattr_permissions= static_nlink noxattrs=
			fsync= timeout= allow_other allow_root default_permissions ro rw nosuid nodev noexec remount"
		local head=${cur%,*} last=${cur##*,}
		[[ $head == "$cur" ]] && head="" || head+=","
		local o
		COMPREPLY=()
		for o in $opts; do
			[[ $o == "$last"* ]] && COMPREPLY+=("$head$o")
		done
		compopt -o nospace 2>/dev/null
		return
	fi
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "-o -f -d -V --version -h --help" -- "$cur"))
		return
	fi
	COMPREPLY=($(compgen -d -- "$cur"))
}
complete -F _ovlfs ovlfs

_ovlctl() {
	local cur prev cmd i
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD-1]}
	local cmds="create apply diff import images rmi mount umount rm prune ls inspect df init check"
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		--root) ((i++)) ;;
		-*) ;;
		*) cmd=${COMP_WORDS[i]}; break ;;
		esac
	done
	if [[ $prev == --root ]]; then
		COMPREPLY=($(compgen -d -- "$cur"))
		return
	fi
	if [[ -z $cmd ]]; then
		COMPREPLY=($(compgen -W "--root --help $cmds" -- "$cur"))
		return
	fi
	local flags="--help"
	case $cmd in
	create | init) flags+=" --parent" ;;
	import) flags+=" --name" ;;
	images | ls | df) flags+=" --json --no-trunc" ;;
	mount) flags+=" --driver --ro" ;;
	rm) flags+=" --force" ;;
	check) flags+=" --repair --json" ;;
	esac
	if [[ $prev == --driver ]]; then
		COMPREPLY=($(compgen -W "auto kernel fuse" -- "$cur"))
	elif [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	else
		COMPREPLY=($(compgen -f -- "$cur"))
	fi
}
complete -F _ovlctl ovlctl
