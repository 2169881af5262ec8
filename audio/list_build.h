/* Building a vr_audio_list, shared by the folder and manifest listings (internal). */
#ifndef VR_AUDIO_LIST_BUILD_H
#define VR_AUDIO_LIST_BUILD_H

#include "vicreg/audio_dataset.h"

/* Appends a copy of path with its label; VR_ERR_NOMEM naming `owner` (the folder or manifest). */
vr_status vr_audio_list_push(vr_audio_list *list, int *capacity, const char *path, int label,
                             const char *owner);

/* dir + "/" + name in a new string, or name alone when it is absolute or dir is empty; NULL
 * when out of memory. */
char *vr_path_join(const char *dir, const char *name);

#endif
