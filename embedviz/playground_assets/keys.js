// The playground's keyboard: space plays and pauses, unless a text field has the focus.
document.addEventListener("keydown", function (event) {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (event.code === "Space" && !typing) {
        event.preventDefault();
        const play = document.getElementById("play");
        if (play) { play.click(); }
    }
});
