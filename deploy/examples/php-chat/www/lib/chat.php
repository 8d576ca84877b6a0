<?php
// The chat's state and tether's push API. Rooms are files of
// "SessionID nick" lines in PHP_CHAT_STATE (SetEnv; default the system's
// temporary directory's php-chat/), changed only under an exclusive lock,
// since the requests of one room are served by several Apache children at
// once.

/** A room or nick name, or null when it is not one. */
function chat_name(string $name): ?string
{
    return preg_match('/^[a-z0-9_-]{1,32}$/', $name) ? $name : null;
}

/**
 * Runs $change on the room's members (SessionID => nick) under the room's
 * lock and stores what it returns.
 */
function chat_with_room(string $room, callable $change): array
{
    $dir = chat_setting('PHP_CHAT_STATE', sys_get_temp_dir() . '/php-chat');
    if (!is_dir($dir)) {
        @mkdir($dir, 0700, true);
    }
    $file = fopen("$dir/$room.members", 'c+');
    flock($file, LOCK_EX);
    $members = [];
    foreach (explode("\n", stream_get_contents($file)) as $row) {
        $parts = explode(' ', $row, 2);
        if (count($parts) === 2) {
            $members[$parts[0]] = $parts[1];
        }
    }
    $members = $change($members);
    ftruncate($file, 0);
    rewind($file);
    foreach ($members as $sid => $nick) {
        fwrite($file, "$sid $nick\n");
    }
    fflush($file);
    flock($file, LOCK_UN);
    fclose($file);
    return $members;
}

/** Appends $line to every member's session through tether's push API. */
function chat_broadcast(array $members, string $line): void
{
    foreach (array_keys($members) as $sid) {
        chat_push($sid, $line);
    }
}

/** Apache's SetEnv, or the process environment (a container's). */
function chat_setting(string $name, string $default): string
{
    $value = $_SERVER[$name] ?? getenv($name);
    return is_string($value) && $value !== '' ? $value : $default;
}

function chat_push(string $sid, string $line): void
{
    $admin = chat_setting('TETHER_ADMIN_URL', 'http://127.0.0.1:9900');
    $token = chat_setting('TETHER_ADMIN_TOKEN', '');
    $context = stream_context_create(['http' => [
        'method' => 'POST',
        'header' => "Authorization: Bearer $token\r\nContent-Type: text/plain; charset=utf-8\r\n",
        'content' => $line . "\n",
        'timeout' => 5,
        'ignore_errors' => true,
    ]]);
    // 204: appended. 404: that session has ended (its close event will
    // remove it). 503: its unsent output is full; the line is dropped for
    // that member rather than holding up the room.
    @file_get_contents("$admin/v1/sessions/" . rawurlencode($sid) . '/lines', false, $context);
}
