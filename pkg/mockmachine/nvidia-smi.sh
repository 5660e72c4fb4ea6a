#!/bin/sh
# nvidia-smi of a gpudra mock machine, written by LayOutHost (pkg/mockmachine)
# with the machine's GPUs filled in. The CDI specs mount it into containers at
# /usr/bin/nvidia-smi, so it needs nothing but a POSIX shell and busybox's
# grep.
#
# It shows the GPUs whose device node /dev/nvidia<minor> the container has, in
# minor order, numbered from 0 as nvidia-smi does inside a container; under a
# GPU, the MIG devices whose compute instance capability node
# /dev/nvidia-caps/nvidia-cap<minor> the container has.
#
#   nvidia-smi                   a short table
#   nvidia-smi -L                the GPUs and MIG devices with their UUIDs
#   nvidia-smi --query-gpu=FIELD[,FIELD...] --format=csv[,noheader][,nounits]
#
# GPUDRA_MOCK_DEV_ROOT: the directory whose dev/ is looked at instead of /dev
# (for tests).

driver_version='@DRIVER_VERSION@'
cuda_version='@CUDA_VERSION@'
# minor|name|uuid|memory MiB|PCI bus ID|compute capability|MIG mode
gpus='@GPUS@'
# parent minor|compute instance capability minor|profile|uuid
migs='@MIGS@'

dev=${GPUDRA_MOCK_DEV_ROOT:-}/dev

usage() {
	echo "nvidia-smi of a gpudra mock machine (no real GPU): driver $driver_version"
	echo "usage: nvidia-smi [-L | --query-gpu=FIELD,... --format=csv[,noheader][,nounits]]"
	echo "fields: name uuid index count memory.total memory.used memory.free pci.bus_id"
	echo "        driver_version compute_cap mig.mode.current utilization.gpu"
}

invalid() {
	echo "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help." >&2
	exit 2
}

# visible prints the lines of $gpus whose device node exists.
visible() {
	printf '%s\n' "$gpus" | while IFS='|' read -r minor rest; do
		if [ -n "$minor" ] && [ -e "$dev/nvidia$minor" ]; then
			printf '%s|%s\n' "$minor" "$rest"
		fi
	done
}

list() {
	i=0
	printf '%s\n' "$rows" | while IFS='|' read -r minor name uuid mem bus cc mig; do
		printf 'GPU %d: %s (UUID: %s)\n' "$i" "$name" "$uuid"
		j=0
		printf '%s\n' "$migs" | while IFS='|' read -r parent cap profile muuid; do
			if [ "$parent" = "$minor" ] && [ -e "$dev/nvidia-caps/nvidia-cap$cap" ]; then
				printf '  MIG %-12sDevice %2d: (UUID: %s)\n' "$profile" "$j" "$muuid"
				j=$((j + 1))
			fi
		done
		i=$((i + 1))
	done
}

# field NAME sets h (its header), v (its value for the GPU in minor, name, ...)
# and u (the unit of v); it fails for a field it does not know.
field() {
	h=$1 u=
	case $1 in
	name | gpu_name) h=name v=$name ;;
	uuid | gpu_uuid) h=uuid v=$uuid ;;
	index) v=$i ;;
	count) v=$n ;;
	memory.total) v=$mem u=MiB ;;
	memory.used) v=0 u=MiB ;;
	memory.free) v=$mem u=MiB ;;
	pci.bus_id | gpu_bus_id) h=pci.bus_id v=$bus ;;
	driver_version) v=$driver_version ;;
	compute_cap) v=$cc ;;
	mig.mode.current) v=$mig ;;
	utilization.gpu) v=0 u=% ;;
	*) return 1 ;;
	esac
	if [ -n "$u" ]; then
		h="$h [$u]"
	fi
}

query() {
	case ,$format, in
	*,csv,*) ;;
	*)
		echo 'Option "--format=csv[,noheader][,nounits]" is required with "--query-gpu".' >&2
		exit 2
		;;
	esac
	set -f
	IFS=', '
	# shellcheck disable=SC2086 # split the field list
	set -- $fields
	unset IFS
	[ $# -gt 0 ] || invalid
	for f; do
		if ! field "$f"; then
			printf 'Field "%s" is not a valid field to query.\n\n' "$f" >&2
			exit 2
		fi
	done
	if [ "${format#*noheader}" = "$format" ]; then
		line= sep=
		for f; do
			field "$f"
			line="$line$sep$h" sep=', '
		done
		printf '%s\n' "$line"
	fi
	i=0
	printf '%s\n' "$rows" | while IFS='|' read -r minor name uuid mem bus cc mig; do
		line= sep=
		for f; do
			field "$f"
			if [ -n "$u" ] && [ "${format#*nounits}" = "$format" ]; then
				v="$v $u"
			fi
			line="$line$sep$v" sep=', '
		done
		printf '%s\n' "$line"
		i=$((i + 1))
	done
}

table() {
	border='+-----------------------------------------------------------------------------------------+'
	rule='+-----------------------------------------+------------------------+----------------------+'
	echo "$border"
	printf '| NVIDIA-SMI %-21s Driver Version: %-14s CUDA Version: %-10s|\n' "$driver_version" "$driver_version" "$cuda_version"
	echo "|-----------------------------------------+------------------------+----------------------+"
	printf '| %-39s | %-22s | %20s |\n' 'GPU  Name' 'Bus-Id' 'Memory-Usage'
	echo "|=========================================+========================+======================|"
	i=0
	printf '%s\n' "$rows" | while IFS='|' read -r minor name uuid mem bus cc mig; do
		printf '| %3d  %-34.34s | %-22s | %9s / %8s |\n' "$i" "$name" "$bus" 0MiB "${mem}MiB"
		i=$((i + 1))
	done
	echo "$rule"
	echo
	echo "$border"
	printf '| %-87s |\n' 'Processes:' ' No running processes found' \
		"(gpudra mock machine: these GPUs are simulated)"
	echo "$border"
}

mode=table fields= format=
while [ $# -gt 0 ]; do
	case $1 in
	-L | --list-gpus) mode=list ;;
	--query-gpu=*) mode=query fields=${1#*=} ;;
	--format=*) format=${1#*=} ;;
	-h | --help)
		usage
		exit 0
		;;
	*) invalid ;;
	esac
	shift
done

rows=$(visible)
if [ -z "$rows" ]; then
	echo "No devices were found"
	exit 6
fi
n=$(printf '%s\n' "$rows" | grep -c .)
$mode
